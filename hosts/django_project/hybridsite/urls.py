from django.http import JsonResponse
from django.urls import path

from tracks.views import play

urlpatterns = [path("tracks/<int:track>/play", play), path("ping", lambda request: JsonResponse({"ok": True}))]

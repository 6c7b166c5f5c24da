from django.db import transaction
from django.http import JsonResponse

from .models import Track


def play(request, track: int) -> JsonResponse:
    with transaction.atomic():  # BEGIN IMMEDIATE: read, then write, without SQLITE_BUSY
        row = Track.objects.get(pk=track)
        row.plays += 1
        row.save(update_fields=["plays"])
    return JsonResponse({"plays": row.plays})

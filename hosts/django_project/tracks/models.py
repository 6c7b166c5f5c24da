from django.db import models


class Track(models.Model):
    title = models.CharField(max_length=200)
    plays = models.IntegerField(default=0)

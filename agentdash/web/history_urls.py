"""Routes of the audit history and charts pages."""

from django.urls import path

app_name = "history"

urlpatterns: list = []

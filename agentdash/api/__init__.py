"""The HTTP JSON API under /api/v1/ (django-ninja): endpoints, schemas, token auth."""

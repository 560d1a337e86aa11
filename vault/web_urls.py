from django.urls import path

from . import web

urlpatterns = [path("secrets/", web.secrets_page, name="web-secrets")]

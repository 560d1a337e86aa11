from django.urls import path, re_path

from . import api
from .names import NAME

urlpatterns = [
    path("secrets", api.SecretListView.as_view(), name="secrets"),
    re_path(rf"^secrets/(?P<name>{NAME})$", api.SecretDetailView.as_view(), name="secret"),
]

from django.urls import path, re_path

from . import api

urlpatterns = [
    path("secrets", api.SecretListView.as_view(), name="secrets"),
    re_path(r"^secrets/(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63})$", api.SecretDetailView.as_view(), name="secret"),
]

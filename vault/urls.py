from django.urls import path, re_path

from . import api

urlpatterns = [
    path("secrets", api.SecretListView.as_view(), name="secrets"),
    # any name reaches the view, whose service judges it (``names.NAME_RE``): one outside the
    # pattern is a 400 naming the rule, not a 404 "no such endpoint"
    re_path(r"^secrets/(?P<name>[^/]+)$", api.SecretDetailView.as_view(), name="secret"),
]

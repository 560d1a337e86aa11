from django.urls import re_path

from . import api

urlpatterns = [
    re_path(r"^runs/(?P<id>[0-9a-fA-F-]{36})/family$", api.RunFamilyView.as_view(), name="run-family"),
]

from django.urls import path

from . import api

urlpatterns = [path("prune", api.PruneView.as_view(), name="prune")]

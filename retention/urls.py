from django.urls import path

from . import api

urlpatterns = [path("prune", api.PruneView.as_view(), name="prune"),
               path("runs/delete", api.RunsDeleteView.as_view(), name="runs-delete"),
               path("runs/<str:pk>/delete", api.RunDeleteView.as_view(), name="run-delete")]

from django.contrib import admin
from django.urls import include, path

from aob_project.metrics import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("workflows.api.urls")),
    path("", include("workflows.web.urls")),
]

handler404 = "workflows.api.errors.json_404"
handler500 = "workflows.api.errors.json_500"

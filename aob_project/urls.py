from django.contrib import admin
from django.urls import include, path

from aob_project.scrape import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    # before the runs' routes, whose runs/{id} would take runs/delete (a 405 for its POST)
    path("api/v1/", include("retention.urls")),
    path("api/v1/", include("workflows.api.urls")),
    path("api/v1/", include("approvals.api.urls")),
    # issue 18: secrets, schedules and hooks, sub-run links, the approval page and its signed links
    path("api/v1/", include("vault.urls")),
    path("api/v1/", include("triggers.urls")),
    path("api/v1/", include("subflows.urls")),
    path("", include("approvals.urls")),
    path("", include("triggers.web_urls")),
    path("", include("vault.web_urls")),
    path("", include("workflows.web.urls")),
]

handler400 = "workflows.api.errors.json_400"
handler404 = "workflows.api.errors.json_404"
handler500 = "workflows.api.errors.json_500"

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from . import docs, index, openapi, views  # openapi registers the schema extension, and serves it

router = SimpleRouter(trailing_slash=False)
router.register("workflows", views.WorkflowViewSet, basename="workflow")
router.register("runs", views.RunViewSet, basename="run")

urlpatterns = [
    path("", index.ApiIndexView.as_view(), name="api-index"),
    path("node-types", index.NodeTypesView.as_view(), name="node-types"),
    path("health", views.HealthView.as_view(), name="health"),
    path("auth/token", views.TokenView.as_view(), name="auth-token"),
    path("auth/me", views.MeView.as_view(), name="auth-me"),
    path("schema/workflow", views.WorkflowSchemaView.as_view(), name="workflow-schema"),
    path("schema/", openapi.SchemaView.as_view(), name="openapi"),
    # Swagger UI and ReDoc from local static files (drf-spectacular-sidecar): the docs work offline.
    path("docs/", docs.swagger_ui, name="api-docs"),
    path("redoc/", docs.redoc, name="api-redoc"),
    path("workflows/validate", views.WorkflowValidateView.as_view(), name="workflow-validate"),
    re_path(r"^artifacts/(?P<artifact_id>[^/\x00]+)$", views.ArtifactView.as_view(), name="artifact"),
    *router.urls,
]

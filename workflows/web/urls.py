"""Web UI routes, mounted at "/". Static files are served here too (from the app folders, via the
staticfiles finders), because the ASGI server is the only web server `make up` runs."""

from django.contrib.auth import views as auth_views
from django.urls import path, re_path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    path("", views.workflow_list, name="web-workflows"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("workflows/new/", views.workflow_new, name="web-workflow-new"),
    path("workflows/<str:tag>/", views.workflow_detail, name="web-workflow"),
    path("runs/", views.run_list, name="web-runs"),
    path("runs/<uuid:run_id>/", views.run_detail, name="web-run"),
    path("approvals/", views.approval_inbox, name="web-approvals"),
    path("favicon.ico", RedirectView.as_view(url="/static/aob/favicon.svg", permanent=True)),
    re_path(r"^static/(?P<path>.+)$", views.static_file, name="web-static"),
]

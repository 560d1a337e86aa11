from django.urls import path

from . import web

urlpatterns = [
    path("approvals/<int:approval_id>/", web.approval_page, name="web-approval"),
    path("approvals/<int:approval_id>/open/<str:token>", web.approval_open, name="web-approval-open"),
]

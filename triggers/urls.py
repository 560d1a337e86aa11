from django.urls import path, re_path

from .api import views

HOOK = r"(?P<hook_id>hk_[A-Za-z0-9_\-]{1,36})"
SCHEDULE = r"(?P<schedule_id>[0-9]{1,18})"

urlpatterns = [
    path("schedules", views.ScheduleListView.as_view(), name="schedules"),
    re_path(rf"^schedules/{SCHEDULE}$", views.ScheduleDetailView.as_view(), name="schedule"),
    re_path(rf"^schedules/{SCHEDULE}/firings$", views.ScheduleFiringsView.as_view(), name="schedule-firings"),
    path("hooks", views.HookListView.as_view(), name="hooks"),
    re_path(rf"^hooks/{HOOK}$", views.HookDetailView.as_view(), name="hook"),
    re_path(rf"^hooks/{HOOK}/rotate$", views.HookRotateView.as_view(), name="hook-rotate"),
    re_path(rf"^hooks/{HOOK}/deliveries$", views.HookDeliveriesView.as_view(), name="hook-deliveries"),
]

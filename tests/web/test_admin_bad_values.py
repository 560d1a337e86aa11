"""A bad value typed into one field of an admin form is that field's error on the form shown again,
never a 500 (a one-truth review's find): Django's autocomplete box looked a value that is no key
up as it was (``ValueError``), beat's crontab page read a refused row's schedule (``ParseException``)
and beat's entry form read a refused ``task`` (``KeyError``)."""

from __future__ import annotations

import pytest
from django.test import Client
from django_celery_beat.models import CrontabSchedule, PeriodicTask

CRON = {"minute": "-1", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
        "timezone": "UTC"}
CASES = {
    "a secret's owner": ("/admin/vault/secret/add/", {"owner": "abc", "name": "X", "value": "v"}, "owner"),
    "a retention policy's owner": ("/admin/retention/retentionpolicy/add/", {"owner": "abc"}, "owner"),
    "a webhook's user": ("/admin/approvals/notificationtarget/add/",
                         {"user": "abc", "group": "", "webhook_url": "https://chat.example/x"}, "user"),
    "a webhook's group": ("/admin/approvals/notificationtarget/add/",
                          {"user": "", "group": "1.5", "webhook_url": "https://chat.example/x"}, "group"),
    "a crontab's minute": ("/admin/django_celery_beat/crontabschedule/add/", CRON, "minute"),
    "a beat entry's task": ("/admin/django_celery_beat/periodictask/add/", {"task": "a\x00b", "name": "n"}, "task"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_is_its_field_s_error_not_a_500(make_user, case):
    url, data, field = CASES[case]
    client = Client(raise_request_exception=False)
    client.force_login(make_user("root", is_staff=True, is_superuser=True))

    response = client.post(url, data)

    assert response.status_code == 200, (case, response.status_code)
    assert field in response.context["adminform"].form.errors, response.context["adminform"].form.errors
    assert not CrontabSchedule.objects.filter(minute="-1").exists() and not PeriodicTask.objects.filter(name="n").exists()

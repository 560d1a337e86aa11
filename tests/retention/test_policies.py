"""Retention days run from a day to a century, for an owner's policy (in the database, whoever
writes it, and named in the admin's form) and for ``AOB_RETENTION_DAYS`` (refused at start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from retention.models import DAYS_MAX, RetentionPolicy
from retention.services import prune
from tests.conftest import stored_run
from workflows.models import Run

OUT_OF_RANGE = [0, DAYS_MAX + 1, 10**8]


@pytest.mark.parametrize("days", OUT_OF_RANGE)
def test_a_policy_outside_a_day_to_a_century_is_refused_by_the_database(user: User, days: int) -> None:
    with pytest.raises(IntegrityError, match="retention_policy_days_range"), transaction.atomic():
        RetentionPolicy.objects.create(owner=user, days=days)
    policy = RetentionPolicy.objects.create(owner=user, days=1)
    with pytest.raises(IntegrityError, match="retention_policy_days_range"), transaction.atomic():
        RetentionPolicy.objects.filter(pk=policy.pk).update(days=days)  # no model validation on this path
    RetentionPolicy.objects.filter(pk=policy.pk).update(days=DAYS_MAX)


def test_one_owners_extreme_policy_cannot_stop_pruning_for_others(user: User, make_user: Any) -> None:
    bob = make_user("bob")
    mine, bobs = stored_run(user), stored_run(bob)
    Run.objects.filter(pk__in=[mine.pk, bobs.pk]).update(status="completed",
                                                         finished_at=timezone.now() - timedelta(days=60))
    with pytest.raises(IntegrityError), transaction.atomic():
        RetentionPolicy.objects.create(owner=user, days=10**8)  # "keep forever": past PostgreSQL's timestamps
    RetentionPolicy.objects.create(owner=user, days=DAYS_MAX)  # the longest there is

    assert prune(dry_run=True)["runs"] == 1
    assert prune()["runs"] == 1
    assert list(Run.objects.values_list("pk", flat=True)) == [mine.pk]  # bob's 30 days (the default) are past


@pytest.mark.parametrize(("days", "rule"), [("0", "greater than or equal to 1"),
                                            (str(10**8), f"less than or equal to {DAYS_MAX}")])
def test_the_admin_names_the_field_and_its_range(user: User, make_user: Any, days: str, rule: str) -> None:
    admin = Client()
    admin.force_login(make_user("root", is_staff=True, is_superuser=True))
    add = "/admin/retention/retentionpolicy/add/"

    refused = admin.post(add, {"owner": user.pk, "days": days})

    assert refused.status_code == 200  # the form again, with its error
    assert refused.context["adminform"].form.errors["days"] == [f"Ensure this value is {rule}."]
    assert not RetentionPolicy.objects.exists()
    assert admin.post(add, {"owner": user.pk, "days": "7"}).status_code == 302
    assert RetentionPolicy.objects.get().days == 7


def start_up(**env: str) -> subprocess.CompletedProcess[str]:
    """Django set up in a new process, as the web app, a worker or beat start."""
    probe = "import django; django.setup(); from django.conf import settings; print(settings.AOB_RETENTION_DAYS)"
    return subprocess.run([sys.executable, "-c", probe], cwd=settings.BASE_DIR, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("days", [str(d) for d in OUT_OF_RANGE])
def test_aob_retention_days_outside_the_range_refuses_start_up(days: str) -> None:
    refused = start_up(AOB_RETENTION_DAYS=days)
    assert refused.returncode != 0
    assert f"environment variable AOB_RETENTION_DAYS must be from 1 to {DAYS_MAX}, not {days}" in refused.stderr


def test_aob_retention_days_inside_the_range_starts() -> None:
    started = start_up(AOB_RETENTION_DAYS=str(DAYS_MAX))
    assert started.returncode == 0, started.stderr[-2000:]
    assert started.stdout.strip().splitlines()[-1] == str(DAYS_MAX)


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("AOB_SCHEDULE_FIRING_RETENTION_DAYS", "0", "must be from 1 to 36500, not 0"),
    # a delivery signed the tolerance (300 s) ahead is fresh for 600 s: kept 300 s, its replay started a run
    ("AOB_HOOK_DELIVERY_RETENTION_S", "600", "must be from 660 to 3153600000, not 600"),
    ("AOB_ARTIFACT_GRACE_S", "99999999999", "must be from 0 to 3153600000, not 99999999999"),
    ("AOB_RETENTION_BATCH_SIZE", "ten", "must be an integer, not 'ten'"),
    ("AOB_RETENTION_CHUNK_ROWS", "0", "must be from 1 to 1000000, not 0"),
])
def test_every_other_age_the_prune_reads_is_bounded_at_start_up_and_named(name: str, value: str, rule: str) -> None:
    """Past a century, ``now -`` the age overflows and every prune fails; a delivery id kept less
    than twice the signature tolerance lets a replay in."""
    refused = start_up(**{name: value})
    assert refused.returncode != 0
    assert f"environment variable {name} {rule}" in refused.stderr

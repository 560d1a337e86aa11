"""What starts a run besides a person: cron schedules (run by Celery beat through django-celery-beat)
and signed webhooks. Each firing and each delivery is a row with a unique key, so a repeat (a beat
restart, a sender's retry, a replayed request) starts nothing new."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Schedule(models.Model):
    class CatchUp(models.TextChoices):
        SKIP = "skip"  # a firing missed (beat down, or later than AOB_SCHEDULE_GRACE_S) does not run
        RUN_ONCE = "run_once"  # missed firings run once, as the most recent one, when beat is back

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # RESTRICT: a workflow's delete does not take its schedules along unasked (``workflow_delete``'s
    # force); its owner's removal, which cascades to both, does.
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.RESTRICT, related_name="schedules")
    name = models.CharField(max_length=200, blank=True, default="")
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    inputs = models.JSONField(default=dict, blank=True)
    # A pinned version of the workflow (its seq), or None for the tag's current version at each firing.
    version = models.PositiveIntegerField(null=True, blank=True)
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.SKIP)
    enabled = models.BooleanField(default=True)
    # Beat's entry is derived from this row and goes with it (``triggers.signals``); deleted on its
    # own (django-celery-beat's admin), the schedule would stay enabled and never fire: refused.
    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", null=True, blank=True,
                                         on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"schedule {self.pk} ({self.cron} {self.timezone})"


class ScheduleFiring(models.Model):
    """One due time of a schedule: ``(schedule, fire_time)`` is the idempotency key of its run."""

    class Outcome(models.TextChoices):
        STARTED = "started"
        SKIPPED = "skipped"  # missed, and the schedule's catch_up is skip
        FAILED = "failed"  # the run could not start (rate limit, invalid version, ...)

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="firings")
    fire_time = models.DateTimeField()
    fired_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    run = models.ForeignKey("workflows.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.JSONField(null=True, blank=True)
    # How often beat sent this firing: more than once after a beat restart; it still ran once.
    deliveries = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["schedule", "fire_time"], name="schedule_firing_unique")]
        ordering = ["-fire_time"]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.fire_time:%Y-%m-%d %H:%M} {self.outcome}"


class Hook(models.Model):
    """``POST /api/v1/hooks/{id}`` starts a run of ``workflow``, signed with this hook's secret."""

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # RESTRICT, as a schedule's: a hook's URL and secret live in a system outside, which would get 404s.
    workflow = models.ForeignKey("workflows.Workflow", on_delete=models.RESTRICT, related_name="hooks")
    name = models.CharField(max_length=200, blank=True, default="")
    # The signing secret, encrypted (vault.crypto): it is shown once, when made or rotated.
    secret_ciphertext = models.TextField()
    # The secret a rotation replaced, encrypted alike, which still signs until its time is up (a
    # sender's retries signed before the rotation): "" when there is none, or it was cut at once.
    # (a database default too: a process of the release before inserts hooks without it)
    previous_secret_ciphertext = models.TextField(blank=True, default="", db_default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Optional input mapping: {"cel": "<expression over body, headers>"} or {"template": <JSON>}.
    mapping = models.JSONField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"hook {self.pk}"


class HookDelivery(models.Model):
    """A delivery that passed the signature check. The sender's delivery id, and the signature
    itself, are unique per hook: a retry or a replay answers with the first run and starts none."""

    hook = models.ForeignKey(Hook, on_delete=models.CASCADE, related_name="deliveries")
    delivery_id = models.CharField(max_length=200)
    signature = models.CharField(max_length=64)
    run = models.ForeignKey("workflows.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hook", "delivery_id"], name="hook_delivery_id_unique"),
            models.UniqueConstraint(fields=["hook", "signature"], name="hook_delivery_signature_unique"),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.hook_id} delivery {self.delivery_id}"


class HookRefusal(models.Model):
    """A delivery that passed the signature check and was refused after it (its mapping failed, the
    workflow refused the inputs, the owner was inactive or past a rate limit): what its sender was
    told, for the hook's owner to see, as Svix, Stripe and GitHub show in a delivery log. Never the
    body. Kept apart from ``HookDelivery``, so a refusal takes up no delivery id and the sender's
    retry can still start the run; each hook keeps its latest ``AOB_HOOK_REFUSALS_KEPT``."""

    hook = models.ForeignKey(Hook, on_delete=models.CASCADE, related_name="refusals")
    delivery_id = models.CharField(max_length=200, blank=True, default="")
    code = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["hook", "-received_at", "-id"], name="hook_refusal_latest")]

    def __str__(self) -> str:
        return f"{self.hook_id} refused {self.delivery_id} ({self.code})"

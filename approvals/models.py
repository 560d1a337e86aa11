from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models

# The admin's order: the waiting first, then the newest (``ApprovalAdmin``), which one index keeps.
PENDING_FIRST = models.Case(models.When(status="pending", then=models.Value(0)), default=models.Value(1),
                            output_field=models.IntegerField())


class Approval(models.Model):
    """A pending human decision: for a ``hitl`` node, or for a run patch where policy asks.

    The wait is this row, not a sleeping task: deadlines are swept by beat."""

    class Kind(models.TextChoices):
        NODE = "node"
        PATCH = "patch"

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    class OnTimeout(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        FAIL = "fail"
        ESCALATE = "escalate"

    run = models.ForeignKey("workflows.Run", on_delete=models.CASCADE, related_name="approvals")
    node_run = models.OneToOneField("workflows.NodeRun", null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="approval")
    patch = models.OneToOneField("workflows.RunPatch", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="approval")
    node_id = models.CharField(max_length=200, blank=True, default="")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.NODE)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    message = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    approvers = models.JSONField(default=list, blank=True)
    required_approvals = models.PositiveIntegerField(default=1)
    allow_self_approval = models.BooleanField(default=True)
    form = models.JSONField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    on_timeout = models.CharField(max_length=10, choices=OnTimeout.choices, blank=True, default="")
    escalate_to = models.JSONField(default=list, blank=True)
    escalation_timeout_ms = models.PositiveBigIntegerField(null=True, blank=True)
    escalated = models.BooleanField(default=False)
    # The digest of the action the gate guards (workflows.definition.gates): while it waits, the one
    # its approvers are asked about (set when it asks, moved when a patch voids its votes; a vote
    # naming another is refused); once settled, the one it settled on.
    action_digest = models.CharField(max_length=80, blank=True, default="")
    # Approvers are reminded once, this long before the deadline (hitl ``remind_before_ms``).
    remind_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    # Notifications about this approval that were not sent: its run had reached
    # AOB_MAX_NOTIFICATIONS_PER_RUN (approvals/notifications.py). It waits in the inbox all the same.
    notifications_not_sent = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # the inbox: the waiting approvals naming a user or their groups (``approvers ?| names``).
        # Scanned, another tenant's 300,000 waiting gates made every inbox load 0.43 s (19 ms)
        indexes = [GinIndex(fields=["approvers"], name="approval_pending_approvers",
                            condition=models.Q(status="pending")),
                   models.Index(PENDING_FIRST, models.F("id").desc(), name="approval_pending_first")]

    def __str__(self) -> str:
        return f"approval {self.pk} ({self.kind} {self.node_id}, {self.status})"


# A vote counts until a change to the action it decided on voids it (``Decision.action_digest``).
COUNTING = models.Q(voided=False)


class DecisionQuerySet(models.QuerySet["Decision"]):
    def counting(self) -> DecisionQuerySet:
        """The votes that count: not voided by a patch that changed the gated action. Every
        reader of votes (the decision itself, who can still decide, the inbox, reminders, the
        gate's output) asks this, and the one-vote-a-person constraint has the same condition."""
        return self.filter(COUNTING)


class Decision(models.Model):
    """One person's vote; N-of-M counts distinct users, so a user votes once."""

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    username = models.CharField(max_length=150)
    approve = models.BooleanField()
    comment = models.TextField(blank=True, default="")
    data = models.JSONField(null=True, blank=True)
    # What the person decided on: the digest of the gated action at that moment. A patch that
    # changes the action voids the decision; the person is asked again.
    action_digest = models.CharField(max_length=80, blank=True, default="")
    voided = models.BooleanField(default=False)
    at = models.DateTimeField(auto_now_add=True)

    objects = DecisionQuerySet.as_manager()

    class Meta:
        # One vote a person, keyed on who they are, not on their name: a renamed user is the same
        # person (a rename let one vote twice), and a new user given an old name is another.
        constraints = [models.UniqueConstraint(fields=["approval", "user"], name="decision_one_per_person",
                                               condition=COUNTING)]
        ordering = ["at"]

    def __str__(self) -> str:
        return f"{self.username}: {'approve' if self.approve else 'reject'}"


class NotificationTarget(models.Model):
    """A Slack-compatible incoming webhook (``{"text": ...}``) for a user or a group of approvers."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="+")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    webhook_url = models.URLField(max_length=2000)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(user__isnull=False) ^ models.Q(group__isnull=False),
                                              name="notification_target_user_xor_group")]

    def __str__(self) -> str:
        return f"webhook for {self.user or self.group}"


class Delivery(models.Model):
    """One notification to one approver (or group) on one channel, with its outcome: for a
    webhook, to one of their targets (each its own attempts, status and key, so a target that
    fails neither repeats the notification to another nor keeps it from one)."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class Reason(models.TextChoices):
        REQUIRED = "required"
        REMINDER = "reminder"
        ESCALATED = "escalated"
        REOPENED = "reopened"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    recipient = models.CharField(max_length=150)  # the username or group name, as the approver list says
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # a webhook's: the one target it goes to (none when that target was deleted since: not sent).
    # No index: nothing reads deliveries by target but a target's delete, which is rare.
    target = models.ForeignKey(NotificationTarget, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+", db_index=False)
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.REQUIRED)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When its ``approvals.notify`` message is due: its publish, its last attempt's claim, or when
    # its retry is due. A pending delivery long past it is one whose message was lost, and is
    # published again (``deliveries_republish``).
    published_at = models.DateTimeField(null=True, blank=True)
    # What its first attempt said, which every later one says again (``notifications._said``): AOB's
    # lines before its link (the deadline as it was then) and its webhook's ``Idempotency-Key``. None
    # before its first attempt.
    said = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        # the hourly bounds (``notifications._within_hourly``) read the last hour's, at every gate that asks
        indexes = [models.Index(fields=["created_at"], name="delivery_created_at")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient} ({self.status})"


class LinkOpen(models.Model):
    """A delivery's signed link, opened by one of its people: each opens it once."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="opens")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    opened_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["delivery", "user"], name="link_open_once")]

    def __str__(self) -> str:
        return f"{self.user_id} opened {self.delivery_id}"

"""Telling approvers a decision waits for them: email through Django's email backend (console in
`make up`, SMTP by settings) and Slack-compatible webhooks (``NotificationTarget``, per user or
group, sent through the SSRF-safe client), each with a signed link to the approval page.

``approval_notify`` records one ``Delivery`` per person (or group) and channel (and webhook) in the caller's
transaction and publishes one ``approvals.notify`` task per delivery after commit, to its own queue
(``wf.notify``, apart from the sweeper's maintenance queue); the task sends,
retries transient failures with backoff, and records the outcome on the delivery. Reminders are
sent once, ``remind_before_ms`` before an approval's deadline, by the ``approvals.remind`` beat task,
which also publishes again a delivery whose publish was lost (the process died between the commit
and the publish): one never attempted ``AOB_NOTIFY_REPUBLISH_AFTER_S`` after its last publish.

One run sends at most ``AOB_MAX_NOTIFICATIONS_PER_RUN`` notifications, whoever asks for them (a
gate naming a group of thousands, a gate in a loop, an agent's patch adding gates, reminders and
escalations): ``approval_notify`` counts the run's deliveries so far, in one query under the run's
lock, and records only what fits. The rest is not sent, and not stored one row each (a loop would
make millions): the approval counts it (``notifications_not_sent``) and, the first time the cap
bites in a run, the run's events say so (``notifications_capped``, naming the cap and the setting).
The approvals themselves wait in the inbox and are decided as ever. Across runs, one owner's
notifications to one person (or group) are bounded too, ``AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR``
in any hour, and to everyone together ``AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR`` (``_within_hourly``):
anyone may name anyone as an approver, and every tenant's mail waits in one queue.

A link is ``/approvals/{id}/open/{token}``: the token is signed (``django.core.signing``, salted,
with a maximum age) and names the delivery, so it opens the approval only for that delivery's
person (or a member of its group), once each; anyone else is refused.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core import signing
from django.db import transaction
from django.db.models import Count, F, Max, Q, Subquery
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac

from aob.text import shown
from aob_project.celery import app
from approvals.models import Approval, Delivery, NotificationTarget
from approvals.selectors import clock, due_in_turns, is_approver
from workers.http import request
from workers.http.exceptions import HTTPRequestError
from workflows.approvers import by_own_name
from workflows.engine import events, locks, poison
from workflows.models import Event, Run

logger = logging.getLogger(__name__)

LINK_SALT = "aob.approvals.link"
KEY_SALT = "aob.approvals.delivery-key"


def approval_notify(*, approval: Approval, reason: str = Delivery.Reason.REQUIRED,
                    names: list[str] | None = None) -> list[Delivery]:
    """Queue the notifications for ``names`` (default: every approver) of ``approval``, as many as
    its run has left of ``AOB_MAX_NOTIFICATIONS_PER_RUN``. Call it holding the run's lock
    (``locks.lock_run``, as every caller does), so two approvals of one run count in turn."""
    deliveries = _wanted(approval, reason, names)
    if not deliveries:
        return []
    deliveries = _within_cap(approval, deliveries)
    if not deliveries:
        return []
    now = timezone.now()
    for delivery in deliveries:
        delivery.published_at = now  # published after commit; if that is lost, deliveries_republish
    Delivery.objects.bulk_create(deliveries)
    ids = [d.pk for d in deliveries]
    transaction.on_commit(lambda: _publish(ids))
    return deliveries


def _wanted(approval: Approval, reason: str, names: list[str] | None) -> list[Delivery]:
    deliveries: list[Delivery] = []
    # a reminder goes to those who have not voted yet: a counted vote cannot be cast again (reminders
    # to voters spent the run's notifications on people with nothing left to do)
    seen_users: set[int] = set() if reason != Delivery.Reason.REMINDER else set(
        approval.decisions.counting().filter(user__isnull=False).values_list("user_id", flat=True))
    for name in dict.fromkeys(names if names is not None else approval.approvers):
        # a group's name tells its members, never a user of that name (workflows.approvers)
        user = User.objects.filter(by_own_name(), username=name, is_active=True).first()
        if user is not None:
            deliveries += _for_user(approval, user, name, reason, seen_users)
            continue
        group = Group.objects.filter(name=name).first()
        if group is None:
            continue
        deliveries += [Delivery(approval=approval, group=group, recipient=name, channel=Delivery.Channel.WEBHOOK,
                                reason=reason, target_id=target) for target in _targets(group=group)]
        # each member's delivery is named as the approval names it, by the group's name: the run's
        # owner reads the deliveries, and may name any group, not only their own (by the members'
        # usernames, naming a group listed who was in it)
        for member in group.user_set.filter(is_active=True).order_by("pk"):
            deliveries += _for_user(approval, member, name, reason, seen_users, webhooks=False)
    return deliveries


def _within_cap(approval: Approval, deliveries: list[Delivery]) -> list[Delivery]:
    """The first of ``deliveries`` that fit the run's owner's hourly bounds (per person or group, and in
    all) and the run's cap. What does not fit is not sent: the approval counts it (``notifications_not_sent``, on
    its page and in the API), and the first time a bound bites in a run, the run's events say so
    (``notifications_capped``, one for each bound that bit then, naming its setting)."""
    wanted = len(deliveries)
    deliveries, hourly, owner_capped = _within_hourly(approval, deliveries)
    cap = settings.AOB_MAX_NOTIFICATIONS_PER_RUN
    # one query: the run's deliveries so far, and whether the cap has bitten before
    usage = Approval.objects.filter(run_id=approval.run_id).aggregate(
        sent=Count("deliveries"), capped=Max("notifications_not_sent"))
    room = max(0, cap - usage["sent"])
    capped = len(deliveries) > room
    deliveries = deliveries[:room]
    not_sent = wanted - len(deliveries)
    if not not_sent:
        return deliveries
    approval.notifications_not_sent += not_sent
    Approval.objects.filter(pk=approval.pk).update(notifications_not_sent=F("notifications_not_sent") + not_sent)
    logger.warning("approval.notifications_capped", extra={"run_id": str(approval.run_id), "approval_id": approval.pk,
                                                           "limit": cap, "sent": len(deliveries), "not_sent": not_sent,
                                                           "past_hourly_bound": sorted(hourly)[:20]})
    if usage["capped"]:  # said once a run, when a bound first bites (an event scan at every gate of a loop is not)
        return deliveries
    recipients = sorted(hourly)[:20]
    bitten = [  # (whether it bit, its setting, the payload's extra keys, what the event says after the limit)
        (capped, "AOB_MAX_NOTIFICATIONS_PER_RUN", {},
         lambda limit: f"this run reached its limit of {limit} notifications (AOB_MAX_NOTIFICATIONS_PER_RUN): "
                       f"{not_sent} about approval {approval.pk} were not sent, nor will later ones be; "
                       f"its approvals wait in the inbox all the same"),
        (bool(hourly), "AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR", {"recipients": recipients},
         lambda limit: f"{', '.join(recipients)} had {limit} notifications in the last hour from this "
                       f"run's owner's runs (AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR): those about approval "
                       f"{approval.pk} were not sent; its approval waits in their inbox all the same"),
        (owner_capped, "AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR", {},
         lambda limit: f"this run's owner's runs sent {limit} notifications in the last hour "
                       f"(AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR): those about approval {approval.pk} were not "
                       f"sent; its approval waits in the inbox all the same"),
    ]
    items = []
    for bit, setting, extra, message in bitten:
        if bit:
            limit = getattr(settings, setting)
            items.append((Event.Type.NOTIFICATIONS_CAPPED, approval.node_id, {
                "approval_id": approval.pk, "limit": limit, "setting": setting, "sent": len(deliveries),
                "not_sent": not_sent, **extra, "message": message(limit)}))
    events.append(approval.run_id, approval.run.owner_id, items)
    return deliveries


def _within_hourly(approval: Approval, deliveries: list[Delivery]) -> tuple[list[Delivery], set[str], bool]:
    """The first of ``deliveries`` within ``AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR`` of the run
    owner's notifications to each person (or group) in the last hour, and within
    ``AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR`` of them to everyone together; the recipients past
    the first, and whether the second bit. Anyone may name anyone as an approver, and the run cap
    bounds one run only: an owner's runs (50 a minute) of gates naming one person mailed them without
    end, and naming a thousand people filled the one queue (``wf.notify``) every tenant's approval
    mail waits in. Counted per owner, so one owner's flood never silences another's gates. Two
    queries, in the caller's run lock: two runs of one owner notifying at once may each pass the
    last few."""
    limit = settings.AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR
    users = {d.user_id for d in deliveries if d.user_id is not None}
    groups = {d.group_id for d in deliveries if d.user_id is None and d.group_id is not None}
    owner = Run.objects.filter(pk=approval.run_id).values("owner_id")
    owners = Delivery.objects.filter(created_at__gte=timezone.now() - timedelta(hours=1),
                                     approval__run__owner_id=Subquery(owner))
    room = settings.AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR - owners.count()
    recent = (owners.filter(Q(user_id__in=users) | Q(user__isnull=True, group_id__in=groups))
              .values("user_id", "group_id").annotate(n=Count("id")))
    counts = {("u", r["user_id"]) if r["user_id"] is not None else ("g", r["group_id"]): r["n"] for r in recent}
    kept, past = [], set()
    for delivery in deliveries:
        key = ("u", delivery.user_id) if delivery.user_id is not None else ("g", delivery.group_id)
        if counts.get(key, 0) >= limit:
            past.add(delivery.recipient)
            continue
        counts[key] = counts.get(key, 0) + 1
        kept.append(delivery)
    return kept[:max(0, room)], past, len(kept) > room


def _for_user(approval: Approval, user: User, name: str, reason: str, seen: set[int],
              webhooks: bool = True) -> list[Delivery]:
    if user.pk in seen:
        return []
    seen.add(user.pk)
    out = []
    if user.email:
        out.append(Delivery(approval=approval, user=user, recipient=name, channel=Delivery.Channel.EMAIL,
                            reason=reason))
    if webhooks:
        out += [Delivery(approval=approval, user=user, recipient=name, channel=Delivery.Channel.WEBHOOK,
                         reason=reason, target_id=target) for target in _targets(user=user)]
    return out


def _targets(**owner: Any) -> list[int]:
    """The enabled webhooks of a user or group, one delivery each (``Delivery.target``)."""
    return list(NotificationTarget.objects.filter(enabled=True, **owner).order_by("pk").values_list("pk", flat=True))


def _publish(ids: list[int]) -> None:

    for pk in ids:
        try:
            app.send_task("approvals.notify", args=[pk])
        except Exception:  # a notification must not break the decision path
            logger.exception("approval.notify_publish_failed", extra={"delivery_id": pk})


class _SignedAt(signing.TimestampSigner):
    """A signer whose timestamp is given, not the clock's: a delivery's link signed at its making."""

    def __init__(self, at: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.at = int(at.timestamp())

    def timestamp(self) -> str:
        return signing.b62_encode(self.at)


def link_for(delivery: Delivery) -> str:
    """The delivery's signed link, the same on every attempt of it (signed as of its making, so its
    age counts from there): a repeat under the delivery's ``Idempotency-Key`` or ``Message-ID`` is
    the same message, where a new signature each attempt made it a different body under one key,
    which a receiver keeping the key may refuse (422) as a conflict."""
    token = _SignedAt(delivery.created_at, salt=LINK_SALT).sign_object({"d": delivery.pk}, compress=True)
    return settings.AOB_PUBLIC_URL + reverse("web-approval-open", args=[delivery.approval_id, token])


def delivery_for_token(token: str) -> Delivery | None:
    """The delivery a link names, if its signature holds and it is not too old."""
    try:
        data = signing.loads(token, salt=LINK_SALT, max_age=settings.AOB_APPROVAL_LINK_MAX_AGE_S)
    except signing.BadSignature:
        return None
    return Delivery.objects.select_related("approval").filter(pk=data.get("d")).first()


def may_open(delivery: Delivery, user: User) -> bool:
    if delivery.user_id is not None:
        return delivery.user_id == user.pk
    return delivery.group_id is not None and user.groups.filter(pk=delivery.group_id).exists()


class TransientNotifyError(Exception):
    """Worth a retry: the mail server or the webhook could not be reached, or answered 5xx/429."""


class RetryLater(Exception):
    """The delivery's next attempt is due in ``countdown_s``: its row says so already, so if the
    message that would make it is lost, ``deliveries_republish`` makes it."""

    def __init__(self, reason: str, countdown_s: float) -> None:
        super().__init__(reason)
        self.countdown_s = countdown_s


def retry_countdown_s(attempts: int) -> float:
    """How long after its ``attempts``-th attempt failed a delivery's next one waits (exponential)."""
    return settings.AOB_NOTIFY_RETRY_BACKOFF_S * 2 ** (attempts - 1)


def delivery_send(*, delivery_id: int) -> str:
    """Send one delivery; returns its status. The row is the one count of its attempts: the first
    and ``AOB_NOTIFY_MAX_RETRIES`` more, however many messages (retries, republished ones) ask.
    Raises :class:`RetryLater` when a transient failure leaves attempts to make."""
    delivery = (Delivery.objects.select_related("approval", "user", "group", "target").filter(pk=delivery_id).first())
    if delivery is None or delivery.status == Delivery.Status.SENT:
        return "gone" if delivery is None else delivery.status
    approval = delivery.approval
    if approval.status != Approval.Status.PENDING:
        Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.FAILED,
                                                       error=f"not sent: the approval is {approval.status}")
        return Delivery.Status.FAILED
    left = _no_longer_asked(delivery)
    if left:
        return _record(delivery, Delivery.Status.FAILED, f"not sent: {left}")
    if delivery.attempts > settings.AOB_NOTIFY_MAX_RETRIES:
        # each attempt allowed was claimed and none came back (its sender died mid-send: out of memory,
        # its hard time limit, a kill): republished without end, each one sent again
        return _record(delivery, Delivery.Status.FAILED, f"not sent again: none of its {delivery.attempts} "
                       "attempts ended (its sender stopped during each)")
    # one sender per attempt: a second message for the same delivery (published again, or sent
    # twice) that read the same attempt finds it taken and sends nothing. The claim moves
    # ``published_at`` too: a sender that dies past it leaves a delivery republished in its turn.
    attempt = delivery.attempts + 1
    said = _said(delivery)  # its first attempt's words and key: the claim keeps them for every later one
    if not Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING,
                                   attempts=delivery.attempts).update(attempts=attempt, published_at=timezone.now(),
                                                                      said=said):
        return Delivery.objects.filter(pk=delivery.pk).values_list("status", flat=True).first() or "gone"
    delivery.said = said
    link = link_for(delivery)
    try:
        if delivery.channel == Delivery.Channel.EMAIL:
            _send_email(delivery, link)
        else:
            _send_webhook(delivery, link)
    except (TransientNotifyError, SoftTimeLimitExceeded) as exc:  # too slow: a passing failure too
        why = (str(exc) if isinstance(exc, TransientNotifyError) else
               "the send took longer than its time limit (half of AOB_NOTIFY_REPUBLISH_AFTER_S)")
        if attempt > settings.AOB_NOTIFY_MAX_RETRIES:
            return _record(delivery, Delivery.Status.FAILED, why)
        countdown = retry_countdown_s(attempt)
        # when the retry is due, written before its message goes out: a lost message is found by it
        Delivery.objects.filter(pk=delivery.pk).update(
            error=_private(delivery, why), published_at=timezone.now() + timedelta(seconds=countdown))
        raise RetryLater(why, countdown) from exc
    except Exception as exc:  # noqa: BLE001 - a permanent failure is recorded on the delivery, not retried
        return _record(delivery, Delivery.Status.FAILED, f"{type(exc).__name__}: {exc}")
    return _record(delivery, Delivery.Status.SENT, "")


def _no_longer_asked(delivery: Delivery) -> str:
    """Why a delivery is not to be sent now, or "": the run's owner was deactivated (nothing of their
    run starts as them any more, ``workflows.engine.owners``: an approval would lead nowhere), or its
    person was, or is no longer named by the approval, nor in a group it names (``is_approver``, the
    rule a decision is judged by), since it was queued. A retry waits out an outage, a message may
    wait behind a busy queue, and a reminder or an escalation comes hours later: the gate's words,
    its run and a link went to someone who had left, or for a run whose owner had."""
    owner = Run.objects.filter(pk=delivery.approval.run_id).values_list("owner__username", "owner__is_active").first()
    if owner is not None and not owner[1]:
        return f"the run's owner {owner[0]} is deactivated: nothing of the run goes on as them"
    person = delivery.user
    if person is None:
        return ""  # a group's own channel; a user deleted since is refused when it is sent
    # named as the delivery is (``_wanted``): a group's member by the group, never by their username
    who = person.username if delivery.recipient == person.username else f"a member of {delivery.recipient}"
    if not person.is_active:
        return f"{who} is no longer active"
    if not is_approver(delivery.approval, person):
        return f"{who} is no longer among the approvers (nor in a group they name)"
    return ""


# Any address, in whatever form it was sent or quoted: an IDN domain goes out as punycode
# (``sanitize_address``), a non-ASCII local part as an encoded word, and a server quotes either.
# Each part as long as an address may be (254 characters, a domain 255): unbounded, a long word
# with no ``@`` was tried from each of its characters to its end (quadratic: 64 KiB, 16 s).
_ADDRESS = re.compile(r"(?!['\"])[^\s<>()\[\]{},;:@]{1,254}@[^\s<>()\[\]{}'\",;:@]{1,255}")
_REDACTED = "<recipient>"
_ERROR_KEPT = 2_000  # characters of a delivery's error kept, and logged
_ERROR_READ = 4 * _ERROR_KEPT  # of the error as raised, redacted: a server's words in it have no bound


def _private(delivery: Delivery, error: str) -> str:
    """``error`` as the delivery keeps it, which the run's owner reads (``GET /approvals/{id}``):
    without any address or the webhook's URL, which a mail server's refusal or a transport error
    may quote, and at most ``_ERROR_KEPT`` characters. The owner may name anyone as an approver; a
    webhook's URL is a credential."""
    if not error:
        return error
    private = []
    if delivery.user is not None and delivery.user.email:
        private.append(delivery.user.email)
    targets = (NotificationTarget.objects.filter(user_id=delivery.user_id) if delivery.user_id is not None else
               NotificationTarget.objects.filter(group_id=delivery.group_id) if delivery.group_id is not None else
               NotificationTarget.objects.none())
    for stored in targets.values_list("webhook_url", flat=True):
        for url in (stored, _as_sent(stored)):
            parts = urlsplit(url)
            private += [url, parts.path + (f"?{parts.query}" if parts.query else "")]
    cut, error = len(error) > _ERROR_READ, error[:_ERROR_READ]
    for text in sorted({t for t in private if len(t) > 1}, key=len, reverse=True):
        error = re.sub(re.escape(text), _REDACTED, error, flags=re.IGNORECASE)
    error = _ADDRESS.sub(_REDACTED, error)
    if cut:
        error = _without_split_word(error, window=max([254 + 1 + 255, *map(len, private)]))
    return error[:_ERROR_KEPT]


def _without_split_word(error: str, *, window: int) -> str:
    """A redacted ``error`` whose end the read cut, without what the cut split: an address or URL
    cut in two is matched by neither rule. What is left of it is the end's last word (none holds a
    space) after the last redaction, and no longer than the longest of them (``window``): dropped
    back to the last space or redaction in the window, the whole window if neither is there. (A
    fixed tail dropped from the redacted text, which redaction shortens, ate the reasons before.)"""
    start = max(len(error) - window, 0)
    marker = error.rfind(_REDACTED, start)
    split = max(marker + len(_REDACTED) if marker >= 0 else -1,
                *(error.rfind(space, start) for space in " \t\n\r\x0b\x0c"))
    return error[:split if split >= 0 else start]


def _as_sent(url: str) -> str:
    """``url`` as the client sends it, and its server may quote it back: percent-encoded, its host
    as punycode."""
    try:
        return str(httpx.URL(url))
    except (httpx.InvalidURL, ValueError):
        return url


def _record(delivery: Delivery, status: str, error: str) -> str:
    error = _private(delivery, error)  # the log too: a webhook's URL is never logged
    Delivery.objects.filter(pk=delivery.pk).update(status=status, error=error,
                                                   sent_at=timezone.now() if status == Delivery.Status.SENT else None)
    logger.info("approval.notified", extra={"approval_id": delivery.approval_id, "delivery_id": delivery.pk,
                                            "channel": delivery.channel, "status": status, "error": error})
    return status


def _lead(delivery: Delivery) -> str:
    lead = {"reminder": "Reminder: approval needed", "escalated": "Escalated: approval needed",
            "reopened": "Approval needed again"}.get(delivery.reason, "Approval needed")
    return f"[AOB] {lead}"


def _subject(delivery: Delivery) -> str:
    """One line: the message may be an agent's words, newlines and all, and a header with a newline
    is refused by the mail library (an email never sent, its approver never told)."""
    approval = delivery.approval
    about = " ".join((approval.message or approval.node_id or "a run").split())
    return f"{_lead(delivery)}: {shown(about[:80])}"


ONCE = "(the link works once, for you only; AOB sends no other link)"
QUOTED = "The run's message (the workflow's or its agent's words, not AOB's):"


def _said(delivery: Delivery) -> dict[str, Any]:
    """What the delivery says at every attempt: what its first attempt said, kept on its row (the
    claim of that attempt writes it), so a repeat under its ``Idempotency-Key`` or ``Message-ID`` is
    the same message (as ``link_for``'s link). Rendered at each attempt from the approval as it then
    was, a retry after an escalation or a patch that asked again said another deadline under the
    first attempt's key: a receiver keeping the key refused it (422, the approver never told) or
    dropped it. The key names the installation too (a keyed hash of ``SECRET_KEY``): two
    installations posting to one receiver, or a database restored, reuse delivery ids. One attempted
    before the key did (a rolling deploy) keeps the key it was sent under."""
    if delivery.said is not None:
        return delivery.said
    installation = "" if delivery.attempts else salted_hmac(KEY_SALT, "installation").hexdigest()[:16] + "-"
    return {"facts": _facts_now(delivery.approval), "key": f"aob-approval-delivery-{installation}{delivery.pk}"}


def webhook_key(delivery: Delivery) -> str:
    """The ``Idempotency-Key`` of every attempt of a webhook delivery once it has been attempted."""
    return str(_said(delivery)["key"])


def _facts(delivery: Delivery) -> list[str]:
    """What AOB itself says before its link: the run and node, the deadline, as its first attempt said them."""
    return [str(line) for line in _said(delivery)["facts"]]


def _facts_now(approval: Approval) -> list[str]:
    lines = [f"A decision is needed: run {approval.run_id}, "
             f"{'patch' if approval.kind == Approval.Kind.PATCH else 'node'} {approval.node_id or '-'}."]
    if approval.deadline:
        lines.append(f"Deadline: {approval.deadline.isoformat()} (then {approval.on_timeout}).")
    return lines


def _quoted(delivery: Delivery) -> list[str]:
    """The gate's message, after AOB's link and quoted as someone else's: it may be an agent's words,
    written to look like AOB's own ("Open the approval: https://evil…"), which plain text cannot
    escape; its place and its quote marks say whose it is. Its bidirectional controls are written as
    escapes (``aob.text``), as the CLI and the pages show them: a right-to-left override drew
    ``$10000`` for ``00001$``."""
    message = delivery.approval.message
    return ["", QUOTED, *(f"> {shown(line)}" for line in message.splitlines())] if message else []


def _text(delivery: Delivery, link: str) -> str:
    return "\n".join([*_facts(delivery), "", f"Open the approval: {link}", ONCE, *_quoted(delivery)])


# A zero-width space after each ``]``, ``@``, ``|`` and ``~``: Markdown's links, images and link
# definitions need ``](``, ``][`` or ``]:`` unbroken, a mention ``@`` right before its name (``~`` a
# Mattermost channel's), and Discord's spoiler (which hides text until clicked) ``||``; the reader
# sees nothing.
_INERT = str.maketrans({"]": "]\u200b", "@": "@\u200b", "|": "|\u200b", "~": "~\u200b"})


def _mrkdwn(text: str) -> str:
    """``text`` shown as itself by the chats that take the Slack-compatible text: its control
    characters escaped as Slack's mrkdwn asks, and Markdown's links and mentions broken for those that
    render Markdown in it (Mattermost, Discord), so a message (an agent's words) can make no link
    (``<https://evil|Open the approval>``, ``[Open the approval](https://evil)``), image, or mention
    (``<!channel>``, ``@all``, ``@everyone``) of its own beside ours. A bare URL stays shown as itself."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").translate(_INERT)


def _webhook_text(delivery: Delivery, link: str) -> str:
    """The Slack-compatible text: everything but our link is escaped, our link is the one link, and
    the message comes after it, quoted (``>`` is mrkdwn's quote, kept unescaped at a line's start)."""
    # the heading is AOB's alone: the message (which the email's subject begins) comes after our link
    lines = [f"*{_lead(delivery)}*", *map(_mrkdwn, _facts(delivery)), "",
             f"Open the approval: <{link}|Open the approval>", ONCE]
    lines += [f"> {_mrkdwn(line[2:])}" if line.startswith("> ") else _mrkdwn(line) for line in _quoted(delivery)]
    return "\n".join(lines)


def message_id(delivery: Delivery) -> str:
    """An email's marker, the same on every attempt of one delivery (RFC 5322's ``Message-ID``, what
    mail stores and clients recognise a repeat by, as a webhook's ``Idempotency-Key``): an email
    sent again after its sender died mid-send is the same message. The domain is AOB's public
    host, the same whichever process sends it."""
    host = urlsplit(settings.AOB_PUBLIC_URL).hostname or "localhost"
    return f"<aob-approval-delivery-{delivery.pk}@{host}>"


def _send_email(delivery: Delivery, link: str) -> None:
    import smtplib

    from django.core.mail import EmailMessage

    if delivery.user is None:
        raise ValueError("the recipient's account no longer exists")
    try:
        EmailMessage(_subject(delivery), _text(delivery, link), None, [delivery.user.email],
                     headers={"Message-ID": message_id(delivery)}).send(fail_silently=False)
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, ConnectionError, TimeoutError) as exc:
        raise TransientNotifyError(f"email: {type(exc).__name__}: {exc}") from exc


def _send_webhook(delivery: Delivery, link: str) -> None:
    """POST the text to the delivery's one target, under the delivery's key."""
    target = delivery.target
    if target is None or not target.enabled or (target.user_id, target.group_id) != (delivery.user_id,
                                                                                      delivery.group_id):
        raise ValueError("its webhook was deleted or disabled since it was queued")
    try:
        # not followed: a 307/308 would send the text, its signed link included, wherever the
        # webhook's server (or whoever answers for it) points; no chat webhook redirects
        # no previews: a URL in the message (an agent's words) would be fetched and shown as an
        # image or a card its host titles (Slack's fields; other chats ignore them)
        result = request(method="POST", url=target.webhook_url, follow_redirects=False,
                         json={"text": _webhook_text(delivery, link), "unfurl_links": False, "unfurl_media": False},
                         headers={"Idempotency-Key": webhook_key(delivery)})
    except HTTPRequestError as exc:
        if exc.extra.get("transient"):
            raise TransientNotifyError(f"webhook: {exc.message}") from exc
        raise
    if result.status_code == 429 or result.status_code >= 500:
        raise TransientNotifyError(f"webhook answered {result.status_code}")
    if result.status_code >= 400:
        raise ValueError(f"webhook answered {result.status_code}")
    if 300 <= result.status_code < 400:
        raise ValueError(f"webhook answered {result.status_code} (a redirect, to "
                         f"{result.headers.get('location', 'nowhere said')!r}): not followed with a signed link; "
                         "give the target its final URL")


def approvals_remind_due() -> int:
    """Queue one reminder for each pending approval whose reminder time has come, each in its own
    transaction: one that fails is logged and left, and never keeps the others' from going out. At
    most a batch a tick, the owners in turn (``due_in_turns``)."""
    now = clock()
    count = 0
    due = Approval.objects.filter(status=Approval.Status.PENDING, remind_at__lte=now, reminded_at__isnull=True)
    for pk, run_id in due_in_turns(due, "remind_at").values_list("pk", "run_id"):
        # a reminder is a courtesy the run does not wait on: a failing one is said, never fails the run
        with poison.sweep_row("approval_remind", run_id=run_id, fail_run=False, approval_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            count += _remind_one(pk, run_id, now)
    return count


def _remind_one(pk: int, run_id: Any, now: Any) -> int:
    with transaction.atomic():
        locks.lock_run(run_id)  # the run row first (workflows/engine/locks.py); its notifications count in turn
        moved = Approval.objects.filter(pk=pk, status=Approval.Status.PENDING, reminded_at__isnull=True).update(
            reminded_at=now)
        if moved:
            approval_notify(approval=Approval.objects.get(pk=pk), reason=Delivery.Reason.REMINDER)
        return moved


def deliveries_republish(*, older_than_s: float, limit: int = 500) -> int:
    """Publish again the deliveries whose message was lost: pending, and due (``published_at``: its
    publish, its last attempt's claim, or when its retry is due) more than ``older_than_s`` ago, so
    neither a publish lost after commit, nor a sender that died mid-attempt with its message, nor a
    retry's message lost in the broker leaves an approver untold. Each is claimed by moving its
    ``published_at`` (so a delivery goes out at most once per period, however often the sweep runs,
    and never as a storm onto the notification queue), then published after commit; the attempts
    it makes count on the row, within the same ``AOB_NOTIFY_MAX_RETRIES``."""
    now = timezone.now()
    stale = now - timedelta(seconds=older_than_s)
    lost = (Delivery.objects.filter(status=Delivery.Status.PENDING)
            .filter(Q(published_at__lt=stale) | Q(published_at__isnull=True, created_at__lt=stale)))
    with transaction.atomic():
        ids = list(lost.order_by("id").select_for_update(skip_locked=True).values_list("pk", flat=True)[:limit])
        if not ids:
            return 0
        Delivery.objects.filter(pk__in=ids).update(published_at=now)
        transaction.on_commit(lambda: _publish(ids))
    logger.info("approval.notify_republished", extra={"deliveries": len(ids)})
    return len(ids)


def deliveries_summary(approval: Approval) -> list[dict[str, Any]]:
    return [{"recipient": d.recipient, "channel": d.channel, "reason": d.reason, "status": d.status,
             "attempts": d.attempts, "error": d.error, "created_at": d.created_at, "sent_at": d.sent_at}
            for d in approval.deliveries.all()]

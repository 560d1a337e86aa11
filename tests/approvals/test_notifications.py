"""An approval tells its approvers: an email (through the workers' SMTP backend, to a loopback mail
server) and a Slack-compatible webhook, each with a signed link that opens the approval for that
approver only, once. Reminders go out before the deadline; every delivery is recorded."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import Client
from django.utils import timezone

from approvals.models import Approval, Delivery, NotificationTarget
from approvals.notifications import _ERROR_READ, _private, _said, approval_notify, webhook_key
from approvals.services import _expire_one
from tests.approvals.runs import refund_flow, submit
from tests.conftest import client_for
from tests.engine.flow import unique, wait_until
from tests.support.remote import Reply
from workflows.registry import MAINTENANCE_QUEUE

LINK = re.compile(r"https?://[^\s<>|]+/approvals/(\d+)/open/([^\s<>|]+)")


def browser(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def link_path(text: str) -> str:
    match = LINK.search(text)
    assert match, text
    return "/" + match.group(0).split("://", 1)[1].split("/", 1)[1]


def test_an_approval_sends_an_email_and_a_webhook_with_a_link_for_that_approver_only(
        engine: Any, user: User, bob: User, carol: User, remote: Any, smtp: Any) -> None:
    bob.email, carol.email = "bob@example.com", "carol@example.com"
    bob.save(), carol.save()
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/echo/slack/bob")
    run_id = submit(user, refund_flow({"approvers": ["bob", "carol"], "timeout_ms": 3_600_000}))

    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    wait_until(lambda: approval.deliveries.filter(status="sent").count() == 3, timeout=30,
               what="email to bob and carol, webhook to bob")
    email = wait_until(lambda: smtp.sent_to("bob@example.com"), what="bob's email")[0]
    hook = wait_until(lambda: remote.hits("/echo/slack/bob"), what="bob's webhook")[0]

    assert "Refund 42 to ACME?" in email["Subject"]
    email_link = link_path(smtp.body(email))
    webhook_link = link_path(json.loads(hook["body"])["text"])
    assert email_link != webhook_link and f"/approvals/{approval.pk}/open/" in email_link
    # another approver, a stranger and nobody cannot use bob's link; a forged one opens nothing
    assert browser(carol).get(email_link).status_code == 403
    assert browser(None).get(email_link)["Location"].startswith("/login/")
    assert browser(bob).get(email_link[:-3] + "xyz").status_code == 404
    opened = browser(bob).get(email_link)
    assert opened.status_code == 302 and opened["Location"] == f"/approvals/{approval.pk}/"
    page = browser(bob).get(opened["Location"])
    assert page.status_code == 200 and f"Approval <span class=\"mono\">{approval.pk}</span>" in page.content.decode()
    assert browser(bob).get(email_link).status_code == 410  # once
    assert browser(bob).get(webhook_link).status_code == 302  # each link once
    # carol's own link works for her
    carol_link = link_path(smtp.body(smtp.sent_to("carol@example.com")[0]))
    assert browser(carol).get(carol_link).status_code == 302

    # recorded on the approval: who, when, which channel, the outcome; in the API and the admin
    details = browser(user).get(f"/api/v1/approvals/{approval.pk}").json()["deliveries"]
    assert sorted((d["recipient"], d["channel"], d["status"]) for d in details) == [
        ("bob", "email", "sent"), ("bob", "webhook", "sent"), ("carol", "email", "sent")]
    assert all(d["sent_at"] for d in details)
    staff = User.objects.create_superuser("root", "root@example.com", "pw-root-123")
    admin_page = browser(staff).get(f"/admin/approvals/approval/{approval.pk}/change/").content.decode()
    assert "bob" in admin_page and "webhook" in admin_page and "sent" in admin_page


def test_a_reminder_goes_out_before_the_deadline(engine: Any, user: User, bob: User, smtp: Any) -> None:
    bob.email = "bob.remind@example.com"
    bob.save()
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000,
                                       "remind_before_ms": 3_599_000}))

    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    wait_until(lambda: approval.deliveries.filter(reason="reminder", status="sent").exists(), timeout=30,
               what="the reminder")

    subjects = [m["Subject"] for m in smtp.sent_to("bob.remind@example.com")]
    assert any(s.startswith("[AOB] Reminder: approval needed") for s in subjects)
    assert approval.deliveries.filter(reason="reminder").count() == 1


def test_a_webhook_that_keeps_failing_is_retried_then_recorded_as_failed(engine: Any, user: User, bob: User,
                                                                         remote: Any) -> None:
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/status/503")
    run_id = submit(user, refund_flow({"approvers": ["bob"]}))

    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    delivery = wait_until(lambda: approval.deliveries.filter(status="failed").first(), timeout=60,
                          what="the delivery given up")

    assert delivery.attempts == 6  # the first try and AOB_NOTIFY_MAX_RETRIES (5) retries
    assert "503" in delivery.error
    assert len(remote.hits("/status/503")) == 6


def key_of(hit: dict[str, Any]) -> str | None:
    return {name.lower(): value for name, value in hit["headers"].items()}.get("idempotency-key")


def test_a_webhook_retry_says_what_its_first_attempt_said_under_its_key(engine: Any, user: User, bob: User,
                                                                       carol: User, remote: Any) -> None:
    """Each attempt rendered the approval as it then was: bob's webhook answered 503, the approval
    escalated meanwhile, and the retry said "(then reject)" and the escalation's deadline under the
    first attempt's Idempotency-Key, which a receiver keeping the key refuses (422: recorded failed,
    bob never told) or drops (a red team's find). A retry says what the first attempt said."""
    hook = unique("hook")
    remote.script(hook, [Reply(503, {"down": True})] * 4 + [{"ok": True}])
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/seq/{hook}")
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000, "on_timeout": "escalate",
                                       "escalate_to": ["carol"], "escalation_timeout_ms": 7_200_000}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    wait_until(lambda: remote.hits(f"/seq/{hook}"), what="bob's webhook tried once (answered 503)")

    # its deadline comes while bob's delivery waits for its retry: the sweep's own step escalates it
    Approval.objects.filter(pk=approval.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert _expire_one(approval.pk, timezone.now()) == 1
    approval.refresh_from_db()
    assert approval.escalated and approval.status == "pending" and approval.on_timeout == "reject"

    delivery = wait_until(lambda: approval.deliveries.filter(user=bob, status="sent").first(), timeout=30,
                          what="bob's delivery sent at a retry")
    hits = remote.hits(f"/seq/{hook}")
    assert len(hits) == delivery.attempts > 1
    assert {key_of(h) for h in hits} == {webhook_key(delivery)}
    assert len({h["body"] for h in hits}) == 1, "one key, two bodies"
    assert "(then escalate)" in json.loads(hits[-1]["body"])["text"]


def test_a_delivery_key_names_its_installation_and_one_sent_before_keeps_its_own(settings: Any) -> None:
    """A key of the delivery's id alone is another installation's (one receiver for two, or a
    database restored) for another message; one first sent under that key keeps it (a rolling deploy)."""
    approval = Approval(run_id=uuid.uuid4(), node_id="approve")
    first, again = (_said(Delivery(pk=7, approval=approval))["key"] for _ in range(2))
    settings.SECRET_KEY = "another installation's secret"
    other = _said(Delivery(pk=7, approval=approval))["key"]
    assert first == again != other and first.endswith("-7") and other.endswith("-7")
    assert _said(Delivery(pk=7, approval=approval, attempts=1))["key"] == "aob-approval-delivery-7"


@pytest.mark.parametrize("broken_first", [False, True], ids=["working target first", "broken target first"])
def test_each_webhook_of_a_person_is_its_own_delivery_and_a_failing_one_neither_repeats_nor_blocks_another(
        engine: Any, user: User, bob: User, remote: Any, broken_first: bool) -> None:
    """A person with two chats: one row for both was sent to each in turn and stopped at the first
    that failed, so each retry of a 503 told the working chat again (six times), or, the broken one
    first, never told it at all (a red team's find). Each target is its own delivery now, with its
    own key, and every attempt of one is the same message (its link signed as of its making): a
    receiver that keeps the key may refuse a different body under it."""
    working = f"{remote.base}/echo/slack/bob-{'b' if broken_first else 'w'}"
    urls = [f"{remote.base}/status/503", working] if broken_first else [working, f"{remote.base}/status/503"]
    for url in urls:
        NotificationTarget.objects.create(user=bob, webhook_url=url)
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    failed = wait_until(lambda: approval.deliveries.filter(channel="webhook", status="failed").first(), timeout=60,
                        what="the broken target's delivery given up")

    sent = approval.deliveries.get(channel="webhook", status="sent")
    told = remote.hits(working.removeprefix(remote.base))
    assert len(told) == 1 and sent.attempts == 1, (len(told), sent.attempts)
    assert key_of(told[0]) == webhook_key(sent)
    retried = remote.hits("/status/503")
    assert failed.attempts == 6 and len(retried) == 6
    assert {key_of(h) for h in retried} == {webhook_key(failed)} != {webhook_key(sent)}
    assert len({h["body"] for h in retried}) == 1  # one key, one message
    assert link_path(json.loads(retried[0]["body"])["text"]) != link_path(json.loads(told[0]["body"])["text"])


def test_the_run_owner_reads_why_a_delivery_failed_without_the_approvers_address(
        engine: Any, user: User, bob: User, smtp: Any) -> None:
    """Anyone may name anyone as an approver; a mail server's refusal quotes the address, which the
    delivery's error, read by the run's owner, must not (the workers' log keeps it out too)."""
    bob.email = "bob.refused@example.com"
    bob.save()
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    failed = wait_until(lambda: approval.deliveries.filter(channel="email", status="failed").first(), timeout=30,
                        what="the refused email")

    answer = client_for(user).get(f"/api/v1/approvals/{approval.pk}").json()
    error = answer["deliveries"][0]["error"]
    assert "SMTPRecipientsRefused" in error and "<recipient>" in error and "550" in error, error
    assert "bob.refused" not in error and "bob.refused" not in failed.error
    assert "bob.refused@example.com" not in engine["worker"].log.read_text()


def test_the_run_owner_reads_why_a_delivery_failed_without_the_approvers_address_as_it_was_sent(
        engine: Any, user: User, bob: User, smtp: Any) -> None:
    """An address's domain goes out as punycode (Django's ``sanitize_address``) and the server's
    refusal quotes that form, not the one stored (a red-team helper's finding)."""
    bob.email = "bob.refused@bücher.example"
    bob.save()
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    wait_until(lambda: approval.deliveries.filter(channel="email", status="failed").first(), timeout=30,
               what="the refused email")

    error = client_for(user).get(f"/api/v1/approvals/{approval.pk}").json()["deliveries"][0]["error"]
    assert "SMTPRecipientsRefused" in error and "<recipient>" in error and "550" in error, error
    assert "bob.refused" not in error and "bcher" not in error, error
    assert "bob.refused@xn--bcher-kva.example" not in engine["worker"].log.read_text()


def test_the_run_owner_reads_why_a_webhook_failed_without_its_url_as_it_was_sent(
        engine: Any, user: User, bob: User, remote: Any) -> None:
    """A webhook's URL is a credential; the client sends it percent-encoded, and its server (here
    moving it to https) quotes that form, not the one stored."""
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/seq/moved?token=sécret-ü")
    remote.script("moved", [Reply(301, {}, (("Location", remote.base.replace("http:", "https:", 1)
                                             + "/seq/moved?token=s%C3%A9cret-%C3%BC"),))])
    run_id = submit(user, refund_flow({"approvers": ["bob"], "timeout_ms": 3_600_000}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    failed = wait_until(lambda: approval.deliveries.filter(channel="webhook", status="failed").first(), timeout=30,
                        what="the webhook refused")

    assert "answered 301" in failed.error and "<recipient>" in failed.error, failed.error
    assert "cret" not in failed.error, failed.error


@pytest.mark.django_db
def test_redacting_a_long_error_takes_time_in_proportion_to_its_kept_part() -> None:
    """A webhook's server may answer a redirect with a 15 KiB Location, quoted in the error; the
    address pattern once tried a long word with no ``@`` from each of its characters (64 KiB, 16 s
    of a notify worker per attempt)."""
    error = "ValueError: webhook answered 302 (a redirect, to 'http://127.0.0.1/" + "a" * 65_536 + "')"
    started = time.monotonic()
    kept = _private(Delivery(), error)
    took = time.monotonic() - started
    assert took < 1, f"{took:.2f} s to redact {len(error)} characters"
    assert kept == error[:len(kept)] and 0 < len(kept) <= 2_000


@pytest.mark.django_db
def test_an_error_cut_before_it_is_redacted_keeps_no_part_of_the_url_the_cut_split(bob: User) -> None:
    """The error is cut before it is redacted, and each URL it quotes shrinks to ``<recipient>``:
    the part of one the cut split, left whole, would come within the 2,000 characters kept."""
    url = "https://hooks.example/services/T0/B0/" + "s3cret" * 30
    NotificationTarget.objects.create(user=bob, webhook_url=url)
    quoted = f"{url} "
    error = quoted * (_ERROR_READ // len(quoted)) + url
    assert len(error) > _ERROR_READ > error.rindex(url)  # the last URL straddles the cut
    kept = _private(Delivery(user=bob), error)
    assert "<recipient>" in kept and "hooks.example" not in kept and "s3cret" not in kept, kept


@pytest.mark.django_db
def test_a_cut_error_full_of_addresses_keeps_its_reason() -> None:
    """A server's redirect quoting a long list of addresses, cut at the read: each address shrinks
    to ``<recipient>``, and a fixed tail dropped from the redacted text then left no reason at all
    (``""``). Only the word the cut split goes now."""
    address = "u" * 200 + "@" + "d" * 200 + ".example"
    location = "https://hooks.example/r?to=" + ",".join([address] * 25)
    error = (f"ValueError: webhook answered 302 (a redirect, to {location!r}): not followed with a "
             "signed link; give the target its final URL")
    assert len(error) > _ERROR_READ
    kept = _private(Delivery(), error)
    assert "d" * 20 not in kept and "u" * 20 not in kept, kept
    assert kept.startswith("ValueError: webhook answered 302 (a redirect, to"), kept


@pytest.mark.django_db
def test_a_cut_error_keeps_the_words_before_the_one_the_cut_split() -> None:
    words = ("refused " + "x" * 200 + "@" + "y" * 200 + ".example ") * 20
    error = "email: SMTPServerDisconnected: " + words
    assert len(error) > _ERROR_READ
    kept = _private(Delivery(), error)
    assert kept.startswith("email: SMTPServerDisconnected: refused <recipient> refused"), kept
    assert "x" * 20 not in kept and "y" * 20 not in kept, kept


# A gate's message may be an agent's words (``"message": "${nodes.agent.output.summary}"``).
HOSTILE_MESSAGE = ("Refund 42?\nBcc: mallory@evil.example <https://evil.example/phish|Open the approval> "
                   "<!channel> & <@U0ADMIN>\n[Open the approval](https://evil.example/md) ![](https://evil.example/pixel) "
                   "[approve]: https://evil.example/ref @all @everyone\n"
                   "hide ||and transfer $10000|| in ~town-square refund \u202e00001$\u202c")


def unfolded(header: str) -> str:
    """A header's value as written before the mail server's line folding (RFC 5322 2.2.3)."""
    return re.sub(r"\r?\n(?=[ \t])", "", header)


def test_an_agents_message_can_neither_silence_the_email_nor_add_a_link_or_mention_to_the_webhook(
        engine: Any, user: User, bob: User, remote: Any, smtp: Any) -> None:
    """Sent by the workers, to the loopback remote and the test mail server."""
    bob.email = "bob.hostile@example.com"
    bob.save()
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/echo/slack/hostile")
    run_id = submit(user, refund_flow({"approvers": ["bob"], "message": HOSTILE_MESSAGE}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    wait_until(lambda: approval.deliveries.filter(status="sent").count() == 2, timeout=30,
               what="the email and the webhook to bob")

    email = wait_until(lambda: smtp.sent_to("bob.hostile@example.com"), what="bob's email")[0]
    subject = unfolded(email["Subject"])
    assert subject.startswith("[AOB] Approval needed: Refund 42? Bcc: mallory@evil.example"), subject
    assert "\n" not in subject and email.get_all("Bcc") is None and email.get_all("Cc") is None
    assert email["To"] == "bob.hostile@example.com"
    body = smtp.body(email).replace("\r\n", "\n")
    # AOB's link first, the message after it, quoted as someone else's words
    assert body.index("Open the approval: http") < body.index("The run's message")
    assert body.rstrip("\n").endswith("> Refund 42?\n> Bcc: mallory@evil.example <https://evil.example/phish|Open the "
                                      "approval> <!channel> & <@U0ADMIN>\n> [Open the approval](https://evil.example/md) "
                                      "![](https://evil.example/pixel) [approve]: https://evil.example/ref @all "
                                      "@everyone\n> hide ||and transfer $10000|| in ~town-square refund "
                                      "\\u202e00001$\\u202c"), body  # a right-to-left override shown as its escape
    sent = json.loads(remote.hits("/echo/slack/hostile")[-1]["body"])
    text = sent["text"]
    assert (sent["unfurl_links"], sent["unfurl_media"]) == (False, False)  # no preview fetched of its URLs
    # one link, ours; the message's angle brackets are text
    links = re.findall(r"<[^<>]*>", text)
    assert len(links) == 1 and re.fullmatch(rf"<{LINK.pattern}\|Open the approval>", links[0]), text
    # and no Markdown link, image, link definition or mention for the chats that render Markdown
    # (Mattermost, Discord): a zero-width space breaks each, unseen
    z = "\u200b"
    assert text.endswith(f"> Refund 42?\n> Bcc: mallory@{z}evil.example &lt;https://evil.example/phish|{z}Open the "
                         f"approval&gt; &lt;!channel&gt; &amp; &lt;@{z}U0ADMIN&gt;\n> [Open the approval]{z}"
                         f"(https://evil.example/md) ![]{z}(https://evil.example/pixel) [approve]{z}: "
                         f"https://evil.example/ref @{z}all @{z}everyone\n> hide |{z}|{z}and transfer $10000|{z}|{z} "
                         f"in ~{z}town-square refund \\u202e00001$\\u202c"), text
    assert not re.search(r"\]\(|\]:|@(all|everyone)|\|\||~town|\u202e", text), text
    assert text.index("|Open the approval>") < text.index("The run's message") < text.index("evil.example")


def test_a_webhook_that_redirects_is_not_followed_with_the_signed_link(
        engine: Any, user: User, bob: User, remote: Any) -> None:
    """A 307/308 would send the text again, its signed link included, wherever the answer points."""
    elsewhere = f"{remote.base}/echo/slack/elsewhere"
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/redirect?to={elsewhere}&code=307")
    run_id = submit(user, refund_flow({"approvers": ["bob"]}))
    approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
    failed = wait_until(lambda: approval.deliveries.filter(channel="webhook", status="failed").first(), timeout=30,
                        what="the webhook refused")

    assert "answered 307 (a redirect, to" in failed.error and "not followed" in failed.error, failed.error
    assert failed.attempts == 1  # not retried either: the answer will not change
    assert len(remote.hits("/redirect")) == 1 and remote.hits("/echo/slack/elsewhere") == []


@pytest.mark.django_db
def test_a_group_approver_is_told_through_its_webhook_and_its_members(user: User, erin: User) -> None:
    from tests.conftest import stored_run

    erin.email = "erin@example.com"
    erin.save()
    NotificationTarget.objects.create(group=Group.objects.get(name="finance"), webhook_url="https://example.com/x")
    approval = Approval.objects.create(run=stored_run(user), approvers=["finance", "nobody-known"])

    deliveries = approval_notify(approval=approval)

    # a member's delivery is named as the approval names it, by the group's name
    assert {(d.recipient, d.user_id, d.channel) for d in deliveries} == {
        ("finance", erin.pk, "email"), ("finance", None, "webhook")}
    assert Delivery.objects.filter(approval=approval).count() == 2
    assert mail.outbox == []  # queued for the workers, not sent from the web process


@pytest.mark.django_db
def test_the_cap_counts_every_notification_of_the_run_reminders_too_and_is_announced_once(
        settings: Any, user: User, bob: User, carol: User, dave: User) -> None:
    """Filling the cap exactly announces nothing; the first notification past it does, once; a later
    approval of the run tells nobody, and another run has a cap of its own."""
    from tests.conftest import stored_run
    from workflows.models import Event

    settings.AOB_MAX_NOTIFICATIONS_PER_RUN = 2
    for person in (bob, carol, dave):
        person.email = f"{person.username}@cap.example.com"
        person.save()
    run = stored_run(user)
    first = Approval.objects.create(run=run, node_id="a", approvers=["bob", "carol"])

    assert len(approval_notify(approval=first)) == 2
    assert not Event.objects.filter(run=run, type="notifications_capped").exists()
    assert approval_notify(approval=first, reason=Delivery.Reason.REMINDER) == []
    second = Approval.objects.create(run=run, node_id="b", approvers=["dave", "bob"])
    assert approval_notify(approval=second) == []

    assert [(a.node_id, a.notifications_not_sent) for a in Approval.objects.filter(run=run).order_by("node_id")] == [
        ("a", 2), ("b", 2)]
    capped = list(Event.objects.filter(run=run, type="notifications_capped").values_list("data", flat=True))
    assert len(capped) == 1 and capped[0]["approval_id"] == first.pk and capped[0]["not_sent"] == 2
    assert Delivery.objects.filter(approval__run=run).count() == 2
    elsewhere = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["dave"])
    assert len(approval_notify(approval=elsewhere)) == 1


def test_a_notification_whose_publish_was_lost_is_published_again_once(engine: Any, user: User, bob: User,
                                                                        smtp: Any) -> None:
    """``approval_notify`` publishes after commit: a process that dies in between left the delivery
    pending for ever, its approver never told. Beat's ``approvals.remind`` publishes it again once
    it is ``AOB_NOTIFY_REPUBLISH_AFTER_S`` old and was never attempted; the real worker sends it."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import stored_run

    bob.email = "bob-lost@example.com"
    bob.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"])
    # what the committed transaction left when its publish never happened (an hour ago)
    lost = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email",
                                   published_at=timezone.now() - timedelta(hours=1))

    wait_until(lambda: Delivery.objects.filter(pk=lost.pk, status="sent").exists(), timeout=30,
               what="the lost delivery published again and sent")
    assert len(smtp.sent_to("bob-lost@example.com")) == 1
    lost.refresh_from_db()
    assert lost.attempts == 1 and lost.published_at > timezone.now() - timedelta(minutes=1)


def test_a_retry_whose_message_was_lost_is_published_again_and_sent(engine: Any, user: User, bob: User,
                                                                      smtp: Any) -> None:
    """A delivery tried once, failed for a passing reason, and whose retry message then went (a
    broker restarted empty while the retry waited its turn, or its sender died with it): it stays
    pending and attempted. The sweep publishes it again once it is past its due time, as it does a
    never-attempted one; before, only those were, and this approver was never told."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import stored_run

    bob.email = "bob-retry-lost@example.com"
    bob.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"])
    lost = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email", attempts=2,
                                   error="email: ConnectionRefusedError",
                                   published_at=timezone.now() - timedelta(hours=1))  # its retry was due then

    wait_until(lambda: Delivery.objects.filter(pk=lost.pk, status="sent").exists(), timeout=30,
               what="the lost retry published again and sent")
    assert len(smtp.sent_to("bob-retry-lost@example.com")) == 1
    lost.refresh_from_db()
    assert lost.attempts == 3 and lost.error == ""


def test_a_republished_delivery_keeps_its_count_of_attempts(engine: Any, user: User, bob: User,
                                                            remote: Any) -> None:
    """The row counts a delivery's attempts, not the message: one republished after its fifth
    attempt makes the last one allowed (``AOB_NOTIFY_MAX_RETRIES`` = 5 retries) and records the
    failure, where a count kept by the message would start again at nought and try six more times."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import stored_run

    target = NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/status/503")
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"])
    lost = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="webhook", attempts=5,
                                   target=target,
                                   error="webhook answered 503",
                                   published_at=timezone.now() - timedelta(hours=1))

    delivery = wait_until(lambda: Delivery.objects.filter(pk=lost.pk, status="failed").first(), timeout=30,
                          what="the last attempt made and recorded")
    assert delivery.attempts == 6 and "503" in delivery.error
    assert len(remote.hits("/status/503")) == 1


def test_a_delivery_whose_every_attempt_died_mid_send_is_not_sent_again(engine: Any, user: User, bob: User,
                                                                        remote: Any) -> None:
    """Attempts are counted when claimed; the cap was judged only when one failed and came back. A
    sender that dies mid-send on every attempt (its hard time limit, out of memory) left the delivery
    republished every period without end, each time sent again."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.conftest import stored_run

    target = NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/status/200")
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"])
    spent = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="webhook", attempts=6,
                                    target=target,
                                    published_at=timezone.now() - timedelta(hours=1))  # its sixth claim, never back

    delivery = wait_until(lambda: Delivery.objects.filter(pk=spent.pk, status="failed").first(), timeout=30,
                          what="the delivery given up")
    assert delivery.attempts == 6 and "none of its 6 attempts ended" in delivery.error
    assert not remote.hits("/status/200")


@pytest.mark.django_db
def test_the_sweep_leaves_a_delivery_whose_retry_is_not_yet_due(user: User, bob: User) -> None:
    """A retry waiting out its backoff (its due time ahead, or only just past) is not lost: the sweep
    publishes neither it nor one past due by less than its period; past that it does, once."""
    from datetime import timedelta

    from django.utils import timezone

    from approvals.notifications import deliveries_republish
    from tests.conftest import stored_run

    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob"])
    now = timezone.now()
    waiting = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email", attempts=3,
                                      published_at=now + timedelta(seconds=40))
    just_due = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email", attempts=1,
                                       published_at=now - timedelta(seconds=5))
    sent = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email", attempts=1,
                                   status="sent", published_at=now - timedelta(hours=1))
    assert deliveries_republish(older_than_s=60) == 0

    Delivery.objects.filter(pk=waiting.pk).update(published_at=now - timedelta(seconds=61))
    assert deliveries_republish(older_than_s=60) == 1
    assert deliveries_republish(older_than_s=60) == 0  # once per period
    waiting.refresh_from_db()
    assert waiting.published_at > now
    assert Delivery.objects.get(pk=just_due.pk).published_at == just_due.published_at
    assert Delivery.objects.get(pk=sent.pk).published_at == sent.published_at


@contextlib.contextmanager
def not_consuming(worker: Any, queue: str) -> Iterator[None]:
    """The stack's worker stops taking ``queue`` (a maintenance queue that is stalled or backed up)."""
    from aob_project.celery import app

    assert app.control.cancel_consumer(queue, destination=[worker.node_name], reply=True, timeout=10)
    try:
        yield
    finally:
        assert app.control.add_consumer(queue, destination=[worker.node_name], reply=True, timeout=10)


def test_an_approver_is_told_through_the_notification_queue_whatever_the_maintenance_queue_holds(
        engine: Any, user: User, bob: User, smtp: Any) -> None:
    """``approvals.notify`` runs on ``wf.notify``, not on the maintenance queue it used to share with
    the sweeper: with no worker taking maintenance work, bob is still told."""
    bob.email = "bob-queue@example.com"
    bob.save()

    with not_consuming(engine["worker"], MAINTENANCE_QUEUE):
        run_id = submit(user, refund_flow({"approvers": ["bob"]}))
        approval = wait_until(lambda: Approval.objects.filter(run_id=run_id).first(), what="the approval")
        wait_until(lambda: approval.deliveries.filter(status="sent").exists(), timeout=30,
                   what="bob's email sent by a worker of wf.notify")

    assert len(smtp.sent_to("bob-queue@example.com")) == 1


NOTIFY_CAP = 3


@pytest.fixture
def capped_worker(engine: dict[str, Any], stack_env: dict[str, str]) -> Iterator[Any]:
    """The stack's worker, swapped for one that sends at most ``NOTIFY_CAP`` notifications a run
    (a worker reads its settings at start; the gate's notifications are recorded in its park)."""
    from tests.security.conftest import swapped_worker

    with swapped_worker(engine, stack_env, "notify-capped", AOB_MAX_NOTIFICATIONS_PER_RUN=str(NOTIFY_CAP)) as proc:
        yield proc


def two_gates_for(group: str) -> dict[str, Any]:
    gate = {"type": "hitl", "config": {"message": "Go on?", "approvers": [group]}}
    return {"nodes": [{"id": "first", **gate}, {"id": "second", **gate},
                      {"id": "done", "type": "transform", "config": {"expression": "'done'"}}],
            "edges": [{"from": "first", "to": "second"}, {"from": "second", "to": "done"}]}


def test_a_run_sends_at_most_its_cap_of_notifications_says_so_once_and_its_gates_still_decide(
        capped_worker: Any, user: User, make_user: Any, smtp: Any) -> None:
    """A gate naming a group larger than the cap tells the first ``NOTIFY_CAP`` of its people only; the
    approval says how many were not told, the run's events say once which bound bit, and a later gate
    of the run tells nobody. Everyone in the group still finds the gates in the inbox and decides them."""
    from tests.approvals.runs import approval_of, decide, events, finished
    from tests.conftest import client_for

    group = Group.objects.create(name="reviewers")
    members = [make_user(f"rev{i}", email=f"rev{i}@cap.example.com") for i in range(5)]
    group.user_set.add(*members)
    run_id = submit(user, two_gates_for("reviewers"))

    first = approval_of(run_id)
    assert first.node_id == "first" and first.deliveries.count() == NOTIFY_CAP
    assert first.notifications_not_sent == len(members) - NOTIFY_CAP
    wait_until(lambda: first.deliveries.filter(status="sent").count() == NOTIFY_CAP, timeout=30, what="the sends")
    told = {m.email for m in members if smtp.sent_to(m.email)}
    assert told == {m.email for m in members[:NOTIFY_CAP]}
    capped = events(run_id, "notifications_capped")
    assert capped == [{"approval_id": first.pk, "limit": NOTIFY_CAP, "setting": "AOB_MAX_NOTIFICATIONS_PER_RUN",
                       "sent": NOTIFY_CAP, "not_sent": 2, "message": capped[0]["message"]}]
    assert "AOB_MAX_NOTIFICATIONS_PER_RUN" in capped[0]["message"]
    shown = client_for(user).get(f"/api/v1/approvals/{first.pk}").json()
    assert shown["notifications_not_sent"] == 2 and len(shown["deliveries"]) == NOTIFY_CAP

    untold = members[-1]  # not told, and still an approver: the gate is in the inbox
    inbox = client_for(untold).get("/api/v1/approvals?status=pending").json()["results"]
    assert [a["id"] for a in inbox] == [first.pk]
    assert decide(untold, first).status_code == 200

    second = wait_until(lambda: Approval.objects.filter(run_id=run_id, node_id="second").first(),
                        what="the second gate")
    assert second.deliveries.count() == 0 and second.notifications_not_sent == len(members)
    assert len(events(run_id, "notifications_capped")) == 1
    assert decide(members[0], second).status_code == 200
    assert finished(run_id).status == "completed"
    assert Delivery.objects.filter(approval__run_id=run_id).count() == NOTIFY_CAP


def test_a_send_ends_before_the_sweep_may_publish_its_delivery_again() -> None:
    """The sweep publishes again a delivery claimed ``AOB_NOTIFY_REPUBLISH_AFTER_S`` ago: a send
    still going then would be made twice. The task's limits end every send well before."""
    from django.conf import settings

    from approvals.tasks import notify

    assert 0 < notify.soft_time_limit < notify.time_limit < settings.AOB_NOTIFY_REPUBLISH_AFTER_S


def test_a_lease_renewal_in_the_moment_after_a_park_stops_nothing(engine: Any, user: User, bob: User, remote: Any,
                                                                   smtp: Any) -> None:
    """A gate's park commits (``running → waiting``) and its notifications are published after the
    commit, while the executor still runs. A lease renewal then found the node waiting, took it for
    a lost lease and raised ``LeaseLost`` into the publishing: the notifications not yet published
    waited for the sweep (``AOB_NOTIFY_REPUBLISH_AFTER_S``, minutes). Here the first publish is held
    while two renewals (a third of the stack's ``AOB_LEASE_S`` apart) come and go."""
    from tests.faults.harness import hooks, mark_stall, wait_stalled
    from tests.support.stack import test_env

    bob.email = "bob.held@example.com"
    bob.save()
    NotificationTarget.objects.create(user=bob, webhook_url=f"{remote.base}/echo/slack/held")
    mark_stall("notify", "review")
    run_id = submit(user, refund_flow({"approvers": ["bob"]}))
    wait_stalled("notify", "review")
    time.sleep(2.5 * float(test_env("")["AOB_LEASE_S"]) / 3)  # the window the fault needs: two renewals
    hooks().set("aob:test:stall_release:notify:review", 1)

    approval = Approval.objects.get(run_id=run_id)
    wait_until(lambda: approval.deliveries.filter(status="sent").count() == 2, timeout=10,
               what="the email and the webhook, both published by the park")
    said = [line for line in engine["worker"].log.read_text().splitlines() if run_id in line and "lease_lost" in line]
    assert said == []  # the executor ended as it parked: waiting


def test_a_reminder_goes_to_the_approvers_who_have_not_voted(user: User, bob: User, carol: User) -> None:
    """A 2-of-2 gate bob has approved: its reminder tells carol only. bob's counted vote cannot be
    cast again, and reminders to voters spent the run's notifications on people with nothing to do
    (a red-team helper's finding)."""
    from approvals.models import Decision
    from tests.conftest import stored_run

    for person in (bob, carol):
        person.email = f"{person.username}@remind.example.com"
        person.save()
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob", "carol"],
                                       required_approvals=2)
    Decision.objects.create(approval=approval, user=bob, username="bob", approve=True)

    reminded = approval_notify(approval=approval, reason=Delivery.Reason.REMINDER)

    assert [d.recipient for d in reminded] == ["carol"]


@pytest.mark.django_db
def test_one_owner_tells_one_person_at_most_its_hourly_bound_whatever_its_runs(
        settings: Any, user: User, bob: User, carol: User, dave: User) -> None:
    """Anyone may name anyone as an approver, and the per-run cap bounds one run: 50 runs a minute
    (the run rate) of a gate naming bob, or of 200 gates each naming him, mailed bob without end.
    One owner's notifications to one person are bounded per hour; past it they are not sent (the
    approval counts them, the run says so once, naming the setting), and another owner's gates, or
    another person in the same gate, are told as ever."""
    from tests.conftest import stored_run
    from workflows.models import Event

    settings.AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR = 2
    for person in (bob, carol, dave):
        person.email = f"{person.username}@storm.example.com"
        person.save()
    told = []
    for node_id in ("a", "b", "c"):
        approval = Approval.objects.create(run=stored_run(user), node_id=node_id, approvers=["bob"])
        told.append(len(approval_notify(approval=approval)))
    assert told == [1, 1, 0]
    assert Approval.objects.get(node_id="c").notifications_not_sent == 1
    third = Approval.objects.get(node_id="c")
    capped = list(Event.objects.filter(run_id=third.run_id, type="notifications_capped").values_list("data", flat=True))
    assert len(capped) == 1 and capped[0]["setting"] == "AOB_MAX_NOTIFICATIONS_PER_RECIPIENT_PER_HOUR"

    both = Approval.objects.create(run=stored_run(user), node_id="d", approvers=["bob", "dave"])
    assert [d.recipient for d in approval_notify(approval=both)] == ["dave"]
    elsewhere = Approval.objects.create(run=stored_run(carol), node_id="e", approvers=["bob"])
    assert [d.recipient for d in approval_notify(approval=elsewhere)] == ["bob"]


@pytest.mark.django_db
def test_one_owner_tells_everyone_together_at_most_its_hourly_bound(settings: Any, user: User, bob: User,
                                                                   carol: User, dave: User) -> None:
    """The bound per person leaves an owner whose gates name many people free to fill the one queue
    every tenant's approval mail waits in (1,000 people at 60 each: 60,000 an hour). One owner's
    notifications to everyone together are bounded per hour too; past it they are not sent (counted,
    said once a run naming the setting), and another owner's gates are told as ever."""
    from tests.conftest import stored_run
    from workflows.models import Event

    settings.AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR = 2
    for person in (bob, carol, dave):
        person.email = f"{person.username}@crowd.example.com"
        person.save()
    first = Approval.objects.create(run=stored_run(user), node_id="a", approvers=["bob", "carol", "dave"])
    assert [d.recipient for d in approval_notify(approval=first)] == ["bob", "carol"]
    assert Approval.objects.get(pk=first.pk).notifications_not_sent == 1
    capped = list(Event.objects.filter(run_id=first.run_id, type="notifications_capped").values_list("data", flat=True))
    assert [c["setting"] for c in capped] == ["AOB_MAX_NOTIFICATIONS_PER_OWNER_PER_HOUR"]

    later = Approval.objects.create(run=stored_run(user), node_id="b", approvers=["dave"])
    assert approval_notify(approval=later) == []
    elsewhere = Approval.objects.create(run=stored_run(carol), node_id="c", approvers=["dave"])
    assert [d.recipient for d in approval_notify(approval=elsewhere)] == ["dave"]


def _delivery_rows_read(sql: str, params: Any) -> int:
    """The rows of ``approvals_delivery`` a statement reads (kept or filtered out), from its plan as run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        (plan,) = cursor.fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node: dict[str, Any]) -> int:
        own = 0
        if node.get("Relation Name") == "approvals_delivery":
            own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * node.get("Actual Loops", 1)
        return own + sum(walk(child) for child in node.get("Plans", []))

    return int(walk(plan[0]["Plan"]))


@pytest.mark.django_db
def test_the_hourly_bounds_read_the_last_hour_not_the_owners_whole_history(user: User, bob: User) -> None:
    """The hourly bounds are counted at every gate that asks, in its run's lock: what they read is the
    last hour's deliveries, not every one the owner's runs ever made (years of gates, at each ask)."""
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from tests.conftest import stored_run

    bob.email = "bob@history.example.com"
    bob.save()
    old = Approval.objects.bulk_create([Approval(run=stored_run(user), node_id=f"g{i}", approvers=["bob"])
                                        for i in range(20)])
    Delivery.objects.bulk_create([Delivery(approval=a, user=bob, recipient="bob", channel="email")
                                  for a in old for _ in range(100)])
    Delivery.objects.update(created_at=timezone.now() - timedelta(days=30))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_delivery")
    asking = Approval.objects.create(run=stored_run(user), node_id="now", approvers=["bob"])

    with CaptureQueriesContext(connection) as queries:
        assert [d.recipient for d in approval_notify(approval=asking)] == ["bob"]

    hourly = [q["sql"] for q in queries.captured_queries
              if "approvals_delivery" in q["sql"] and '"created_at" >=' in q["sql"] and "COUNT" in q["sql"].upper()]
    assert hourly  # the two counts of _within_hourly
    read = [_delivery_rows_read(sql, None) for sql in hourly]  # the captured SQL has its parameters inlined
    assert max(read) < 100, read

"""kill -9 of the notification worker's pool process after the mail server has taken an approval
email (the whole message received) and before the server's final reply reached the sender, so the
delivery's row still says ``pending`` with its attempt claimed. Celery puts the message back
(``task_reject_on_worker_lost``; else ``approvals.remind`` republishes it), the next attempt sends
the email again: at-least-once, as docs/DESIGN.md allows, but "made recognisable". A webhook
delivery carries ``Idempotency-Key: aob-approval-delivery-<id>`` on every attempt; an email's
marker is its ``Message-ID`` (RFC 5322 §3.6.4, what mail stores and clients deduplicate by), and
Django made a new one each send, so the approver's mailbox held two different messages; now it is
``notifications.message_id``, the same each attempt (its control: ``aob:test:message_id_off``)."""

from __future__ import annotations

import threading
from email.message import Message
from typing import Any

import psutil
import pytest
from django.db import transaction

from approvals.models import Approval, Delivery
from approvals.notifications import approval_notify
from tests.conftest import stored_run
from tests.support.smtp import SmtpServer
from workflows.engine import locks
from workflows.registry import NOTIFY_QUEUE

from .harness import Victim, hooks, kill9, wait_for

pytestmark = [pytest.mark.fault]


class HoldingSmtp(SmtpServer):
    """The suite's loopback mail server, holding its final ``250`` for the first message it takes
    whole until ``release`` is set: the sender dies in that moment."""

    def __init__(self) -> None:
        self.received = threading.Event()
        self.release = threading.Event()
        super().__init__()

    def accepted(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)
            first = len(self.messages) == 1
        if first:
            self.received.set()
            self.release.wait(30)

    def reset(self) -> None:
        """Hold the next message's reply again, as the first's."""
        with self.lock:
            self.messages.clear()
        self.received.clear()
        self.release.clear()

    def close(self) -> None:
        self.release.set()
        super().close()


@pytest.fixture(scope="module")
def mail_server() -> Any:
    server = HoldingSmtp()
    yield server
    server.close()


@pytest.fixture(scope="module")
def notifier(workers, stack_env, mail_server):
    """The only consumer of ``wf.notify`` while this module runs, one pool process, sending to the
    holding mail server."""
    victim = Victim(workers, {**stack_env, "EMAIL_PORT": str(mail_server.port)}, [NOTIFY_QUEUE], concurrency=1)
    yield victim
    victim.close()


def test_an_approval_email_sent_again_after_its_sender_died_is_recognisable_as_the_same(
        engine, notifier, mail_server, user, make_user, name="bob"):
    bob = make_user(name, email=f"{name}-killed@example.com")
    approval = Approval.objects.create(run=stored_run(user), node_id="a", approvers=[name])
    with transaction.atomic():
        locks.lock_run(approval.run_id)
        [delivery] = approval_notify(approval=approval)
    assert delivery.channel == Delivery.Channel.EMAIL and delivery.user_id == bob.pk

    assert mail_server.received.wait(30), "the email never reached the mail server"
    [pool] = psutil.Process(notifier.pid).children()
    kill9(pool.pid, inside=[notifier.pid])  # the server has the message; the sender never heard so
    mail_server.release.set()

    wait_for(lambda: Delivery.objects.filter(pk=delivery.pk, status="sent").exists(), 60,
             "the delivery sent again and recorded")
    copies = [m for m in mail_server.messages if f"{name}-killed@example.com" in (m.get("To") or "")]
    assert len(copies) == 2, f"{len(copies)} copies at the mail server"
    ids = [m.get("Message-ID") for m in copies]
    assert ids[0] == ids[1], (
        f"the same approval email, sent again after its sender died, is a new message to the mail server and "
        f"the approver's client: Message-ID {ids[0]} then {ids[1]}, and no header names the delivery "
        f"(headers: {sorted(set(copies[1].keys()))})")


@pytest.mark.faults_full  # a control: `make test-faults` only
def test_control_a_new_message_id_each_send_is_a_new_message(engine, notifier, mail_server, user, make_user):
    mail_server.reset()
    hooks().set("aob:test:message_id_off", 1)
    try:
        with pytest.raises(AssertionError, match="is a new message"):
            test_an_approval_email_sent_again_after_its_sender_died_is_recognisable_as_the_same(
                engine, notifier, mail_server, user, make_user, name="bob-control")
    finally:
        hooks().delete("aob:test:message_id_off")

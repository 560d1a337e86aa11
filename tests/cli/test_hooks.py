"""``aob hook``: a hook's deliveries, the refused ones with why, as its owner sees them."""

from __future__ import annotations

import time

from rest_framework.test import APIClient

from triggers.services.hooks import signature_for
from workflows.services.definitions import workflow_save

ECHO = {"nodes": [{"id": "echo", "type": "transform", "config": {"expression": "inputs"}}], "edges": []}


def deliver(hook_id: str, secret: str, body: bytes, delivery: str) -> int:
    ts = str(int(time.time()))
    return APIClient().post(f"/api/v1/hooks/{hook_id}", body, content_type="application/json",
                            HTTP_X_AOB_TIMESTAMP=ts, HTTP_X_AOB_DELIVERY=delivery,
                            HTTP_X_AOB_SIGNATURE="sha256=" + signature_for(secret, ts, body)).status_code


def test_hook_deliveries_lists_refused_ones_with_why(as_alice, alice):
    workflow_save(owner=alice, tag="on-push", definition=ECHO)
    made = as_alice("-o", "json", "hook", "add", "on-push", "--cel", "{'n': body.missing}")
    assert made.code == 0, made.err
    hook = made.json()
    assert deliver(hook["id"], hook["secret"], b'{"x": 1}', "gh-delivery-7") == 400

    shown = as_alice("hook", "deliveries", hook["id"])
    as_json = as_alice("-o", "json", "hook", "deliveries", hook["id"])

    assert shown.code == 0, shown.err
    assert "gh-delivery-7" in shown.out and "refused" in shown.out and "mapping_failed" in shown.out
    [entry] = as_json.json()["results"]
    assert (entry["delivery_id"], entry["outcome"], entry["error"]["code"]) == ("gh-delivery-7", "refused",
                                                                                "mapping_failed")
    assert entry["error"]["details"] == {"field": "mapping.cel", "rule": "cel_evaluation"}


def test_hook_rotate_keeps_the_old_secret_for_a_grace_unless_told_to_cut_it(as_alice, alice):
    workflow_save(owner=alice, tag="on-push", definition=ECHO)
    hook = as_alice("-o", "json", "hook", "add", "on-push").json()

    kept = as_alice("hook", "rotate", hook["id"])
    cut = as_alice("-o", "json", "hook", "rotate", hook["id"], "--grace", "0")

    assert kept.code == 0, kept.err
    assert "secret: whsec_" in kept.out and "the previous secret still signs until" in kept.out
    assert cut.code == 0, cut.err
    assert cut.json()["previous_secret_expires_at"] is None
    assert deliver(hook["id"], cut.json()["secret"], b"{}", "after-cut") == 202
    assert deliver(hook["id"], hook["secret"], b"{}", "old-one") == 401

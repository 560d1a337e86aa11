"""Large run inputs (past ``run_inputs.SMALL_BYTES``) are read once in an engine process and kept
(``workflows/engine/run_inputs.py``), not at every claim and decision: a run of 16 MiB of small
values cost each of those a quarter of a second, the decisions on the coordinator every user
shares. The nodes and conditions that read them read the same values either way.

Negative control: with the kept inputs switched off (``aob:test:inputs_unkept``), every claim and
every full decision reads them again."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client

from tests.conftest import wait_for_run
from tests.engine.flow import edge, submit, transform
from tests.test_observability import metric
from workflows.engine import run_inputs
from workflows.models import NodeRun

HOOKS = redis.Redis.from_url(settings.REDIS_URL)
STEPS = 8
# past SMALL_BYTES, and read by every step: a condition on each edge (a full decision each) and
# each node's expression (its claim); ``dispatch: queue`` sends every node through a worker
INPUTS = {"flag": True, "items": [{"n": i, "pad": "x" * 40} for i in range(2000)]}
CHAIN = {"nodes": [transform(f"s{i}", "inputs.items.size() + inputs.items[1].n") for i in range(STEPS)],
         "edges": [edge(f"s{i}", f"s{i + 1}", "inputs.flag == true") for i in range(STEPS - 1)]}


def reads(client: Client) -> float:
    return metric(client.get("/metrics").content.decode(), "aob_run_inputs_read_total")


@pytest.fixture
def scraper(client: Client, settings: Any) -> Client:
    settings.AOB_METRICS_TOKEN = "scraper-token"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scraper-token"
    return client


def run_chain(api: Any, scraper: Client) -> float:
    """Runs the chain; how many times its inputs were read from the database meanwhile."""
    before = reads(scraper)
    run = wait_for_run(submit(api, CHAIN, INPUTS))
    assert run.status == "completed", run.error
    assert run.inputs_bytes > run_inputs.SMALL_BYTES
    outputs = dict(NodeRun.objects.filter(run=run).values_list("node_id", "output"))
    assert outputs == {f"s{i}": 2001 for i in range(STEPS)}  # every node and condition read them whole
    return reads(scraper) - before


def test_large_inputs_are_read_once_in_a_process_not_at_every_claim_and_decision(engine, api, scraper):
    argv = engine["worker"].popen.args
    processes = int(argv[argv.index("-c") + 1])  # the stack's worker's pool: at most one read each
    assert run_chain(api, scraper) <= processes < STEPS  # STEPS claims and STEPS - 1 full decisions read them


def test_negative_control_without_the_kept_inputs_every_claim_and_decision_reads_them(engine, api, scraper):
    HOOKS.set("aob:test:inputs_unkept", 1)
    try:
        assert run_chain(api, scraper) >= 2 * STEPS - 1
    finally:
        HOOKS.delete("aob:test:inputs_unkept")

"""/metrics moves when a run completes; a node's log line carries the API call's request id."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, multiprocess

from aob_project.logs import formatter
from tests.conftest import wait_for_run

ROOT = Path(__file__).resolve().parents[1]


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_when_a_run_completes(engine, api, client, settings):
    settings.AOB_METRICS_TOKEN = "scraper-token"
    client.defaults["HTTP_AUTHORIZATION"] = "Bearer scraper-token"
    before = client.get("/metrics").content.decode()
    queue = {"dispatch": "queue"}  # worker nodes: their queue wait is observed, and b's step is plain
    definition = {"nodes": [{"id": "a", "type": "transform", "config": {"expression": "1", **queue}},
                            {"id": "b", "type": "transform", "config": {"expression": "2", **queue}},
                            {"id": "c", "type": "transform", "config": {"expression": "3", **queue}}],
                  "edges": [{"from": "a", "to": "b", "condition": "true"}, {"from": "b", "to": "c"}]}
    run = wait_for_run(api.post("/api/v1/runs", {"workflow": definition}, format="json").json()["run_id"])
    assert run.status == "completed"
    after = client.get("/metrics").content.decode()
    # what finished is counted as it finishes; the database gauges count only what is in flight
    assert metric(after, "aob_runs_finished_total", status="completed") == metric(
        before, "aob_runs_finished_total", status="completed") + 1
    assert 'aob_node_runs{status="queued",type="transform"}' in after
    assert 'status="completed"' not in "".join(line for line in after.splitlines() if line.startswith("aob_node_runs{"))
    # histograms observed in the worker processes, aggregated through the multiprocess directory
    assert metric(after, "aob_node_duration_seconds_count", type="transform", status="completed") >= metric(
        before, "aob_node_duration_seconds_count", type="transform", status="completed") + 2
    assert metric(after, "aob_node_queue_seconds_count", type="transform") >= 2
    # a's branch rule takes the full decision; b's plain edge and the end of the run the plain step
    for step in ("plain", "full"):
        assert metric(after, "aob_coordinator_decision_seconds_count", step=step) >= metric(
            before, "aob_coordinator_decision_seconds_count", step=step) + 1, step


def test_compose_processes_share_a_metrics_directory():
    """docker-compose.yml set no ``PROMETHEUS_MULTIPROC_DIR`` (only ``make up`` and the tests did): each
    container kept its counters in its memory, so /metrics showed the answering web process's alone,
    never a worker's histograms (``aob_node_duration_seconds``, ``aob_coordinator_decision_seconds``,
    ``aob_llm_*``), and its two uvicorn workers' counters by turns."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    apps = [name for name, service in services.items() if service.get("image") == "aob:latest"]
    assert "web" in apps and "coordinator" in apps and "worker-agent" in apps
    directories = {services[name]["environment"].get("PROMETHEUS_MULTIPROC_DIR") for name in apps}
    assert len(directories) == 1 and None not in directories, directories
    (directory,) = directories
    for name in apps:
        mounts = [volume.split(":")[1] for volume in services[name].get("volumes", [])]
        assert directory in mounts, f"{name} writes {directory} in its own container, unseen by web"


def test_processes_of_two_hosts_with_one_pid_keep_their_own_counts(tmp_path):
    """Compose's containers share the metrics directory and each numbers its processes from 1:
    prometheus_client named a process's file by its pid alone, so two containers' pid 1 wrote one
    file and each overwrote the other's counts. A file is named by host and pid."""
    count = ("import os, socket, sys\n"
             "socket.gethostname = lambda: sys.argv[1]\n"  # two containers' processes, both pid 1
             "os.getpid = lambda: 1\n"
             "from aob_project import metrics\n"
             "metrics.PATCHES.labels('applied').inc()\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for host in ("web_1", "worker"):
        subprocess.run([sys.executable, "-c", count, host], cwd=ROOT, env=env, check=True, timeout=60)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_web-1-1.db", "counter_worker-1.db"]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("aob_patches_total", {"status": "applied"}) == 2


def test_node_log_line_carries_the_request_id(engine, api):
    definition = {"nodes": [{"id": "logged_node", "type": "transform", "config": {"expression": "1"}}], "edges": []}
    response = api.post("/api/v1/runs", {"workflow": definition}, format="json", HTTP_X_REQUEST_ID="req-test-4242")
    assert response["X-Request-ID"] == "req-test-4242"
    run = wait_for_run(response.json()["run_id"])
    assert run.request_id == "req-test-4242"
    lines = [json.loads(line) for line in engine["worker"].log.read_text().splitlines()
             if line.startswith("{") and "logged_node" in line]
    started = [entry for entry in lines if entry.get("event") == "node_run.completed"
               and entry.get("run_id") == str(run.pk)]
    assert started, "no JSON log line for the node execution"
    assert started[0]["request_id"] == "req-test-4242"
    assert started[0]["node_id"] == "logged_node" and re.fullmatch(r"\d+", str(started[0]["node_run_id"]))
    events = list(run.events.order_by("seq").values_list("request_id", flat=True))
    assert events and all(rid == "req-test-4242" for rid in events)


def test_an_outbound_url_is_not_logged_whole(engine, api, remote):
    """A URL can be a credential (a webhook's path, a token in its query): the worker's log names
    the host of each request, never the rest (httpx's own INFO line would)."""
    secret_path = "/echo/T0AOB/B0LOG/credential-in-path-7f3a"
    definition = {"nodes": [{"id": "call", "type": "http",
                             "config": {"url": f"{remote.base}{secret_path}?token=credential-in-query-91c2"}}],
                  "edges": []}
    response = api.post("/api/v1/runs", {"workflow": definition}, format="json")
    run = wait_for_run(response.json()["run_id"])
    assert run.status == "completed", run.error
    assert any(request["path"].startswith(secret_path) for request in remote.requests)
    refused = {"nodes": [{"id": "call", "type": "http", "config": {"url": "$inputs.url"}}], "edges": []}
    response = api.post("/api/v1/runs", {"workflow": refused, "inputs": {
        "url": "http://10.0.0.1/internal?token=credential-refused-5be0"}}, format="json")
    run = wait_for_run(response.json()["run_id"])
    assert run.status == "failed" and "private" in str(run.error), run.error
    log = engine["worker"].log.read_text()
    assert "http.request" in log and "http.ssrf_blocked" in log
    for credential in ("credential-in-path-7f3a", "credential-in-query-91c2", "credential-refused-5be0"):
        assert credential not in log, credential


@pytest.mark.parametrize("json_output", [True, False])
def test_a_logged_value_cannot_forge_a_log_line(json_output):
    """A line break or a terminal escape in a message another library logs (its text can come from
    outside: a remote's error, a task's exception) is written on one line, escaped, in either
    format (``AOB_LOG_JSON``). The console format printed such a message as it was, so a remote
    could write a line that looked like the app's own, or clear an operator's screen. (Django
    escapes a request's path itself; AOB's own messages are constants with the values apart.)"""
    options = formatter(json_output=json_output)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(options.pop("()")(**options))
    # the record handed to the handler itself: whatever another test did to the logger's level
    handler.handle(logging.LogRecord("celery.app.trace", logging.ERROR, __file__, 0, "Task %s raised: %s",
                                     ("wf.tasks.http", "bad gateway\n2026-12-05T00:00:00Z [critical ] forged\x1b[2J\x85"),
                                     None))
    lines = handler.stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "forged" in lines[0]
    assert not {"\x1b", "\x85"} & set(lines[0])


@pytest.mark.parametrize("json_output", [True, False])
def test_a_log_line_is_bounded_whatever_its_values_hold(json_output):
    """A logged value can come from anyone: Django's ``Not Found: <path>`` and the request beside it
    carry a visitor's path (tens of KB), an exception's text a remote's answer or a tenant's data. Each
    was written whole, so a line was as long as what was sent. Each value, the message and the
    exception included, is clipped, its start and end kept and the characters left out counted."""
    options = formatter(json_output=json_output)
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(options.pop("()")(**options))
    path = "/nothing-here/" + "a" * 60_000 + "-end"
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 0, "Not Found: %s", (path,), None)
    record.status_code, record.request = 404, f"<ASGIRequest: GET '{path}'>"
    handler.handle(record)
    try:
        raise ValueError("remote said: " + "b" * 200_000 + " -end of the error")
    except ValueError:
        failed = logging.LogRecord("workflows", logging.ERROR, __file__, 0, "node_run.crashed", (), sys.exc_info())
    handler.handle(failed)
    clipped, crashed = handler.stream.getvalue().splitlines()[0], handler.stream.getvalue().split("\n", 1)[1]
    assert len(clipped) < 12_000, len(clipped)
    assert "Not Found: /nothing-here/aaa" in clipped and "-end" in clipped and "characters left out" in clipped
    assert "404" in clipped
    assert len(crashed) < 24_000, len(crashed)
    assert "ValueError" in crashed and "-end of the error" in crashed and "characters left out" in crashed

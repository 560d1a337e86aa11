"""kill -9 of an agent between its model's response and the end of the tool call it asked for:
the tool's request (an ``execute_pipeline`` ``http_request``) is held at the remote while the
agent's worker is killed — its pool process, or the whole agent worker (started again). The lease
lapses, the sweeper queues the node again, and the resumed attempt replays the agent's journal
(``agents/journal.py``: the model's response was recorded before its tool ran), so the model is
not asked again; the tool's result was not recorded (it was mid-call), so its request is sent
again (*re-sent*, until it carries an Idempotency-Key). Two controls: the journal switched off
(its rows deleted before the resume: the model is asked again) and the sweeper switched off."""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from agents.models import AgentTurn
from tests.engine.flow import submit, wait_all
from tests.support.fake_llm import FakeLLM
from workflows.models import NodeRun
from workflows.registry import queue_for

from .harness import Trial, Victim, kill9, pause_sweeper, record, resume_sweeper, wait_for
from .probe import Probe, account, settle

FAULT = "agent killed between LLM response and tool call"
pytestmark = [pytest.mark.fault, pytest.mark.faults_full]
EXPECTED = {"plan": "completed", "after": "completed"}
MODEL_CALLS = 2  # the tool call, then the answer


@pytest.fixture(scope="module")
def agent_worker(workers, stack_env):
    """The only consumer of the agent queue while this module runs, with one pool process."""
    victim = Victim(workers, stack_env, [queue_for("agent")], concurrency=1)
    yield victim
    victim.close()


@pytest.fixture
def model(fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, remote) -> FakeLLM:
    """The stand-in model answers by the conversation, not by a script, so a resumed attempt that
    replays or repeats gets the same answers: the tool call until a tool result is there, then text."""
    def reply(body: dict[str, Any], item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages", [])
        hold = next(m["content"] for m in messages if m["role"] == "user").rsplit(" ", 1)[-1]
        if any(m["role"] == "tool" for m in messages):
            return FakeLLM.reply(body, {"content": "Done."})
        pipeline = {"steps": [{"op": "http_request", "url": f"{remote.base}/hold/{hold}"}]}
        return FakeLLM.reply(body, {"tool_calls": [("execute_pipeline", pipeline)]})

    monkeypatch.setattr(fake_llm, "reply", reply)
    return fake_llm


def agent_flow(tag: str) -> Probe:
    plan, after = f"plan_{tag}", f"after_{tag}"
    definition = {
        "nodes": [{"id": plan, "type": "agent", "config": {"task": f"fetch the data held at fx-{tag}"}},
                  {"id": after, "type": "transform", "config": {"expression": f"nodes.{plan}.message"}}],
        "edges": [{"from": plan, "to": after}],
    }
    return Probe(tag, definition, {"tool": f"/hold/fx-{tag}"})


def kill_between(trial: Trial, agent_worker: Victim, model: FakeLLM, api, remote,
                 while_down: Any = None) -> tuple[list[str], list[Probe], float]:
    """Kill the agent mid-tool-call; ``while_down(run_id, probe)`` runs once it is dead, before a
    worker can take the node again (a control's switch)."""
    kill = trial.choice("kill", ["child", "worker"])
    p = agent_flow(trial.tag)
    run_ids = [submit(api, p.definition)]
    wait_for(lambda: remote.hits(p.effects["tool"]), 60, "the tool's request at the remote")
    time.sleep(trial.uniform("hold_s", 0.0, 0.5))
    assert NodeRun.objects.get(run_id=run_ids[0], node_id=p.id("plan")).status == "running"
    if kill == "child":
        [pool] = psutil.Process(agent_worker.pid).children()
        kill9(pool.pid, inside=[agent_worker.pid])
    else:
        agent_worker.kill_all()
    fault_at = time.time()
    if while_down is not None:
        while_down(run_ids[0], p)
    remote.release(f"fx-{trial.tag}")
    if kill == "worker":
        agent_worker.restart()
    return run_ids, [p], fault_at


def test_the_run_completes_and_the_node_is_applied_once(trial: Trial, engine, agent_worker, model, api, remote):
    run_ids, probes, fault_at = kill_between(trial, agent_worker, model, api, remote)
    settle(run_ids, timeout=60)
    outcome = account(run_ids, probes, remote, fault_at, resend_ok=True, expected=EXPECTED)
    outcome.llm_repeated = max(0, len(model.requests) - MODEL_CALLS)
    record(trial, outcome)
    assert outcome.clean, f"{trial}: {outcome.detail}"
    assert outcome.llm_repeated == 0, f"{trial}: the resumed agent asked the model again"


def test_control_without_the_journal_the_model_is_asked_again(control_trial: Trial, engine, agent_worker, model,
                                                              api, remote):
    def forget(run_id: str, probe: Probe) -> None:
        """The journal switched off: its rows deleted while the agent is dead. After the worker's
        restart (about 2 s, more on a loaded machine) the lease (3 s) could have lapsed and the
        node been taken again, replaying the journal before it was deleted."""
        plan = NodeRun.objects.get(run_id=run_id, node_id=probe.id("plan"))
        AgentTurn.objects.filter(node_run_id=plan.pk).delete()

    run_ids, probes, fault_at = kill_between(control_trial, agent_worker, model, api, remote, while_down=forget)
    settle(run_ids, timeout=60)
    outcome = account(run_ids, probes, remote, fault_at, resend_ok=True, expected=EXPECTED)
    outcome.llm_repeated = max(0, len(model.requests) - MODEL_CALLS)
    record(control_trial, outcome)
    assert outcome.llm_repeated >= 1, f"{control_trial}: the control repeated no model call, so the trial proves nothing"


def test_control_without_the_sweeper_the_killed_agent_is_lost(control_trial: Trial, engine, agent_worker, model,
                                                              api, remote):
    pause_sweeper()
    run_ids, probes, fault_at = kill_between(control_trial, agent_worker, model, api, remote)
    settle(run_ids, timeout=8)
    outcome = account(run_ids, probes, remote, fault_at, resend_ok=True, expected=EXPECTED)
    record(control_trial, outcome)
    resume_sweeper()
    assert outcome.lost >= 1, f"{control_trial}: the control lost nothing, so the trial proves nothing"
    runs = wait_all(run_ids, timeout=60)
    assert {r.status for r in runs} == {"completed"}

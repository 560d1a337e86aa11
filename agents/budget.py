"""LLM spend: every model call of every agent node is bounded, not only where a node declares a budget.

Before a call its worst case (the prompt, and ``max_tokens`` of completion, at the model's price)
is reserved against three ceilings: the node's own ``budget`` if it declares one (passing it fails
the node), the run's (``Run.budget`` as its owner raised it, else the operator's
``AOB_RUN_MAX_TOKENS`` / ``AOB_RUN_MAX_COST_USD``; passing it pauses the node until the owner
raises it) and the owner's for the UTC day (``AOB_OWNER_DAILY_COST_USD``; passing it fails the
node). After the call the reservation is released to the actual usage, in the same transaction
that journals the response. Every call made is charged, an attempt's that lost the race to journal
its turn as well, and so is one whose answer never came back but which may have reached the
provider (``llm.made``: a timeout, the node cut off mid-call), at its worst case
(``charge_worst_case``). A reservation is its attempt's (``<node run>/<attempt>``): it holds while
that attempt runs, so a late release from a lapsed attempt never frees the next attempt's. One
left by an attempt that is no longer running (its process killed mid-call) is a call made with
no answer: the next reservation of a run or owner that holds it charges it at its worst case
(``_settle``), and the lapsed attempt's own late release, if it comes, then adds nothing. A run
that ends with one (cancelled, failed elsewhere, its lost node given up: nothing of it reserves
again) has it charged once the run ended a lease's time ago (``settle_lapsed``, asked by the agent
type's ``on_run_finished``), and the budget sweep charges what a process that died before that
left (``sweep_lapsed``).

A sub-workflow's spend also counts against its parent's ceilings, and theirs, up the nesting
(``Run.within``): the reservation and the usage are written to every run of that line at once, so
children running side by side share what their parent has left instead of each taking all of it.
The runs of a line are locked child first, then parent, as every path that locks two runs does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.exceptions import BudgetExceeded, BudgetPaused, OwnerBudgetExceeded
from agents.llm import Call, price
from agents.models import OwnerSpend
from aob_project.metrics import LLM_COST, LLM_TOKENS
from workflows.engine import owners, poison
from workflows.engine.dispatch import broker_countdown
from workflows.models import Event, NodeRun, Run
from workflows.models.run import usage_add

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    run_id: str
    node_run_id: int
    attempt: int
    owner_id: int
    day: date
    tokens: int
    cost_usd: float
    model: str = ""
    max_tokens: int = 0  # of ``tokens``, the completion's share

    @property
    def key(self) -> str:
        return f"{self.node_run_id}/{self.attempt}"

    @property
    def prompt_tokens(self) -> int:
        """Of ``tokens``, the prompt's share: what the call's prompt cannot exceed."""
        return self.tokens - self.max_tokens


def totals(run_id: str) -> dict[str, Any]:
    usage = Run.objects.values_list("usage", flat=True).get(pk=run_id) or {}
    return {"tokens": usage.get("tokens", 0), "cost_usd": usage.get("cost_usd", 0.0), "calls": usage.get("calls", 0)}


# What a provider adds to a prompt's text, a message's or a tool's (its role and separators, a
# tool's rendering), in tokens: a few in OpenAI's counting, taken generously.
ITEM_OVERHEAD_TOKENS = 16


def worst_case(model: str, messages: list[dict[str, Any]], max_tokens: int,
               tools: list[dict[str, Any]] | None = None) -> tuple[int, float]:
    """Tokens and cost a call cannot exceed (``llm._counts`` believes no count past them): a
    byte-level tokenizer's token is at least one byte, so the prompt is at most its JSON's UTF-8
    bytes (the tools' schemas sent beside the messages included) and each message's and tool's
    overhead. A third of the bytes was no bound: digits and commas ("0,1,2,...", a tool's everyday
    output) are a token a byte in cl100k and o200k, and such a call was charged a third of its bill."""
    prices = price(model)
    prompt = (len(json.dumps([messages, tools or []], ensure_ascii=False).encode())
              + ITEM_OVERHEAD_TOKENS * (len(messages) + len(tools or []) + 1))
    return prompt + max_tokens, (prompt * prices["input"] + max_tokens * prices["output"]) / 1_000_000


def reserve(*, run_id: str, node_run_id: int, attempt: int, model: str, messages: list[dict[str, Any]],
            max_tokens: int, node_budget: dict[str, Any] | None,
            tools: list[dict[str, Any]] | None = None) -> Reservation:
    tokens, cost = worst_case(model, messages, max_tokens, tools)
    day = timezone.now().date()
    key = f"{node_run_id}/{attempt}"
    replaced = {key, str(node_run_id)}  # its attempt's last one, or one written before keys named attempts
    with transaction.atomic():
        line = _line(run_id)
        run = line[0]
        usage = run.usage or {}
        _check_node_budget(node_budget, usage, replaced, tokens, cost, str(run.pk))
        checked, live = _check_line(line, replaced, tokens, cost)  # at the ceiling: a pause, ``loop._pause`` judges it
        if not owners.owner_active(run.owner_id):  # deactivated since the node started: no further call
            raise owners.OwnerInactive.of(run.owner_id, f"run {run_id}'s agent makes no further model call")
        for each, held in checked:
            each.usage = _settle(each, held, live)
            each.usage["reservations"] = {**each.usage["reservations"], key: {"tokens": tokens, "cost_usd": cost}}
        spend = _owner_day(run.owner_id, day)
        held_today = {k: v for k, v in spend.reserved.items() if k not in replaced}
        live_today = _holding(set(held_today))
        spent = spend.cost_usd + sum(v for k, v in held_today.items() if k not in live_today)  # with the lapsed ones
        in_flight = sum(v for k, v in held_today.items() if k in live_today)
        if spent + in_flight + cost > settings.AOB_OWNER_DAILY_COST_USD:
            raise OwnerBudgetExceeded(
                f"the owner's LLM spend today (${spent:.4f}) and this call (up to ${cost:.6f}) would pass "
                f"the daily ceiling of ${settings.AOB_OWNER_DAILY_COST_USD}",
                extra={"reason": "owner_daily", "transient": False})
        for each in line:
            Run.objects.filter(pk=each.pk).update(usage=each.usage)
        spend.cost_usd = spent
        spend.reserved = {**{k: v for k, v in held_today.items() if k in live_today}, key: cost}
        spend.save(update_fields=["reserved", "cost_usd"])
    return Reservation(str(run_id), node_run_id, attempt, run.owner_id, day, tokens, cost, model, max_tokens)


def _settle(run: Run, held: dict[str, Any], live: set[str]) -> dict[str, Any]:
    """``run``'s usage with each of ``held`` that no longer holds (its attempt is not running: its
    process died mid-call) charged at its worst case, as a call made, and only the live ones left
    reserved. The node run of such a call, where it is ``run``'s own, lists it with why."""
    usage = dict(run.usage or {})
    # (node run, what it reserved) of each lapsed one: two attempts of one node run may both have lapsed
    lapsed = [(_node_run(k), v) for k, v in held.items() if k not in live]
    if lapsed:
        ours = set(NodeRun.objects.filter(pk__in={pk for pk, _ in lapsed}, run_id=run.pk).values_list("pk", flat=True))
        for node_run_id, v in lapsed:
            call = Call(model="", prompt_tokens=v["tokens"], cost_usd=v["cost_usd"], errors=[LAPSED])
            _add_usage(usage, call)
            usage["cut_off_calls"] = usage.get("cut_off_calls", 0) + 1
            if node_run_id in ours:
                _record_node_call(node_run_id, call)
    usage["reservations"] = {k: v for k, v in held.items() if k in live}
    return usage


LAPSED = "its attempt ended before the answer (the process died mid-call): charged at its worst case"
CUT_OFF = "no answer came back, but the request may have reached the provider: charged at its worst case"
USAGE_UNKNOWN = ("the answer counted no usage the call could have (none, a count that is no non-negative integer, "
                 "or one past the call's worst case): charged at its worst case")


def fits_now(*, run_id: str, tokens: int, cost: float, node_budget: dict[str, Any] | None = None) -> bool:
    """Whether a call a run's ceiling (or its node's ``node_budget``, beside calls in flight) refused
    would fit now: the reservation's own checks, under the line's locks (so a release or raise that
    committed first is seen). The paused node run holds no reservation of its own: it is not running."""
    with transaction.atomic():
        line = _line(run_id)
        try:
            _check_node_budget(node_budget, line[0].usage or {}, set(), tokens, cost, run_id)
            _check_line(line, set(), tokens, cost)
        except BudgetPaused:
            return False
        except BudgetExceeded:  # no release makes room: it goes on, to fail saying so
            return True
    return True


def _check_line(line: list[Run], replaced: set[str], tokens: int,
                cost: float) -> tuple[list[tuple[Run, dict[str, Any]]], set[str]]:
    """Every run of the line, with its reservations (but those the call replaces), and those of them
    that still hold, once the call fits in each; else BudgetPaused naming the first run it does not
    fit in. A reservation whose attempt lapsed counts as spent (``_settle`` charges it), one that
    holds as reserved (``_spent``): both count."""
    checked = [(each, {k: v for k, v in ((each.usage or {}).get("reservations") or {}).items() if k not in replaced})
               for each in line]
    live = _holding({k for _, held in checked for k in held})
    for above, (each, held) in enumerate(checked):
        _check_run_ceilings(each, held, live, tokens, cost, above=above, top=each is line[-1])
    return checked, live


def _spent(usage: dict[str, Any], reserved: dict[str, Any], live: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a run has spent, counting each of ``reserved`` whose attempt lapsed (a call made, which
    ``_settle`` charges at its worst case), and what its calls in flight hold (those in ``live``)."""
    lapsed = [v for k, v in reserved.items() if k not in live]
    held = [v for k, v in reserved.items() if k in live]
    return ({"tokens": usage.get("tokens", 0) + sum(r["tokens"] for r in lapsed),
             "cost_usd": usage.get("cost_usd", 0.0) + sum(r["cost_usd"] for r in lapsed),
             "calls": usage.get("calls", 0)},
            {"tokens": sum(r["tokens"] for r in held), "cost_usd": sum(r["cost_usd"] for r in held)})


def _line(run_id: str) -> list[Run]:
    """The run and the runs its spend also counts against (its parent, theirs, ...), each locked,
    child first. A line cut short (a run above gone, or deeper than the nesting allows) ends in a
    run whose own ceilings then fall back to the operator's (``_check_run_ceilings``)."""
    line: list[Run] = []
    next_id: str | None = run_id
    while next_id is not None and len(line) <= settings.AOB_SUBWORKFLOW_MAX_DEPTH:
        if any(str(r.pk) == str(next_id) for r in line):
            break
        found = Run.objects.select_for_update().only("usage", "budget", "owner_id").filter(pk=next_id).first()
        if found is None:
            break
        line.append(found)
        next_id = found.within
    if not line:
        raise Run.DoesNotExist(run_id)
    return line


def _line_ids(run_id: Any) -> list[str]:
    """``_line``'s runs, unlocked."""
    ids: list[str] = []
    next_id: Any = run_id
    while next_id is not None and len(ids) <= settings.AOB_SUBWORKFLOW_MAX_DEPTH and str(next_id) not in ids:
        budget = Run.objects.filter(pk=next_id).values_list("budget", flat=True).first()
        if budget is None:
            break
        ids.append(str(next_id))
        next_id = budget.get(Run.WITHIN)
    return ids


def _holding(keys: set[str]) -> set[str]:
    """The reservations among ``keys`` that still hold: their attempt is the node run's and it is
    running. (A key written before reservations named their attempt holds while its node run runs.)"""
    if not keys:
        return set()
    named = {key: key.partition("/") for key in keys}
    running = dict(NodeRun.objects.filter(pk__in={int(pk) for pk, _, _ in named.values()},
                                          status=NodeRun.Status.RUNNING).values_list("pk", "attempts"))
    return {key for key, (pk, _, attempt) in named.items()
            if int(pk) in running and (not attempt or int(attempt) == running[int(pk)])}


def _check_run_ceilings(run: Run, reserved: dict[str, Any], live: set[str], tokens: int, cost: float, *,
                        above: int, top: bool) -> None:
    """Passing a run's ceilings pauses the node until that run's owner raises them. A ceiling left
    null (a sub-workflow's) is the runs above; at the top of a line cut short, the operator's. What
    the pause says was spent counts the calls whose attempt lapsed (``_spent``): left out, a call a
    killed attempt reserved held the room no release would free, and ``only_a_raise`` said a
    release could (the node waited for ever, its figures saying the call fit). ``above``: how far
    up the line ``run`` is (0: the node's own run)."""
    spent, held = _spent(run.usage or {}, reserved, live)
    spent_tokens, spent_cost = spent["tokens"], spent["cost_usd"]
    limits = dict(run.ceilings)
    if top:
        limits["max_tokens"] = settings.AOB_RUN_MAX_TOKENS if limits["max_tokens"] is None else limits["max_tokens"]
        limits["max_cost_usd"] = (settings.AOB_RUN_MAX_COST_USD if limits["max_cost_usd"] is None
                                  else limits["max_cost_usd"])
    max_tokens, max_cost = limits["max_tokens"], limits["max_cost_usd"]
    if ((max_tokens is None or spent_tokens + held["tokens"] + tokens <= max_tokens)
            and (max_cost is None or spent_cost + held["cost_usd"] + cost <= max_cost)):
        return
    call = {"tokens": tokens, "cost_usd": cost}  # exact: fits_now judges it
    figures = {"spent": spent, "held": held, "budget": limits, "next_call": call}
    if above:
        # A run above is not this run's to tell of: the pause is written into the node's own run, whose
        # every reader reads it, and one asked in a child run only is told nothing of its parent
        # (``selectors.run_get``'s ``within_hidden``, ``subflows.selectors.run_family``). It says how far
        # up the run is (its owner, who sees the line, finds it: ``budget.within_run``, the family) and
        # what the wake needs of its figures; before, it named the run and its ceilings and spend.
        raise BudgetPaused(
            f"the budget of the run {above} above this one, which this sub-workflow's spend counts against, cannot "
            f"cover the next model call (up to {tokens} tokens, ${cost:.6f}) beside what is spent and reserved "
            "there; its owner can raise it",
            extra={"reason": "budget", "above": above, "only_a_raise": only_a_raise(figures), "next_call": call})
    shown = ", ".join(text for text in (f"{max_tokens} tokens" if max_tokens is not None else "",
                                        f"${max_cost}" if max_cost is not None else "") if text)
    raise BudgetPaused(
        f"the run's budget ({shown}) cannot cover the next model call (up to {tokens} tokens, ${cost:.6f}) beside "
        "what is spent and reserved; its owner can raise it",
        extra={"reason": "budget", "budget_run_id": str(run.pk), **figures})


def paused_on(pause: dict[str, Any]) -> str:
    """The run whose ceiling a pause (``pause``: a ``BudgetPaused``'s extra) met, as the node's own
    run may tell of it: ``run <id>`` for its own, else how far above it is (``_check_run_ceilings``)."""
    return f"run {pause['budget_run_id']}" if pause.get("budget_run_id") else f"the run {pause.get('above')} above this one"


def only_a_raise(pause: dict[str, Any]) -> bool:
    """Whether the call a pause refused (``pause``: a ``BudgetPaused``'s extra, as its ``node_paused``
    event keeps it) passes its run's ceiling even with no other call reserved: no release can make
    room for it then (``wake``), only a raise by the run's owner. A pause on a run above says so
    itself (``only_a_raise``): its figures are that run's, not written into this one."""
    if "only_a_raise" in pause:
        return bool(pause["only_a_raise"])
    try:
        spent, limits, call = pause["spent"], pause["budget"], pause["next_call"]
    except (KeyError, TypeError):
        return False
    return ((limits["max_tokens"] is not None and spent["tokens"] + call["tokens"] > limits["max_tokens"])
            or (limits["max_cost_usd"] is not None and spent["cost_usd"] + call["cost_usd"] > limits["max_cost_usd"]))


def _check_node_budget(budget: dict[str, Any] | None, usage: dict[str, Any], replaced: set[str], tokens: int,
                       cost: float, run_id: str) -> None:
    """A node's declared budget bounds what its run spends: a call is made only when its worst case
    (``tokens``, ``cost``) fits beside what the run has spent and what its calls in flight hold (a
    sibling's, a delegate's: the run's reservations but ``replaced``, this attempt's own). A
    reservation whose attempt lapsed is a call made (``_settle`` charges its worst case) and counts as
    spent. One that cannot fit beside the spend fails the node; one that could once the calls in
    flight end (their actual usage replaces their worst case) waits for them as a run's ceiling does
    (``BudgetPaused``: ``wake`` judges it again with ``fits_now``). Checked under the run's lock.
    Before, only what was already spent was compared, so the call that passed the budget was made,
    and K delegates copying it made K of them at once."""
    if not budget:
        return
    max_tokens, max_cost = budget.get("max_tokens"), budget.get("max_cost_usd")
    reserved = {k: v for k, v in (usage.get("reservations") or {}).items() if k not in replaced}
    spent, held = _spent(usage, reserved, _holding(set(reserved)))
    held_tokens, held_cost = held["tokens"], held["cost_usd"]
    figures = {"spent": spent, "budget": {"max_tokens": max_tokens, "max_cost_usd": max_cost},
               "next_call": {"tokens": tokens, "cost_usd": cost}, "held": held}
    if max_tokens is not None and spent["tokens"] + tokens > max_tokens:
        raise BudgetExceeded(f"the node's budget of {max_tokens} tokens cannot cover the next model call (up to "
                             f"{tokens} tokens) beside the {spent['tokens']} the run has used", extra=figures)
    if max_cost is not None and spent["cost_usd"] + cost > max_cost:
        raise BudgetExceeded(f"the node's budget of ${max_cost} cannot cover the next model call (up to ${cost:.6f}) "
                             f"beside the ${spent['cost_usd']:.6f} the run has spent", extra=figures)
    if ((max_tokens is not None and spent["tokens"] + held_tokens + tokens > max_tokens)
            or (max_cost is not None and spent["cost_usd"] + held_cost + cost > max_cost)):
        raise BudgetPaused(f"the node's budget cannot cover the next model call (up to {tokens} tokens, ${cost:.6f}) "
                           f"beside what the run has spent and what its calls in flight hold ({held_tokens} tokens, "
                           f"${held_cost:.6f}): it waits for them to end",
                           extra={"reason": "budget", "budget_run_id": run_id, "node_budget": budget, **figures})


def _owner_day(owner_id: int, day: date) -> OwnerSpend:
    OwnerSpend.objects.get_or_create(owner_id=owner_id, day=day)
    return OwnerSpend.objects.select_for_update().get(owner_id=owner_id, day=day)


def release(reservation: Reservation, call: Call | None = None) -> None:
    """Replace the reservation with the call's actual usage (none if the call failed), in the run and
    every run its spend counts against. Call inside the transaction that journals the response, so
    usage counts exactly once. A ledger that no longer holds the reservation has charged it at its
    worst case already (``_settle``: its attempt lapsed meanwhile): the call adds nothing there."""
    with transaction.atomic():
        line = _line(reservation.run_id)
        counted = False  # by the node run's own run
        for run in line:
            usage = dict(run.usage or {})
            held = dict(usage.get("reservations") or {})
            if held.pop(reservation.key, None) is None:
                continue
            counted = counted or run is line[0]
            usage["reservations"] = held
            if call is not None:
                _add_usage(usage, call)
            Run.objects.filter(pk=run.pk).update(usage=usage)
        spend = _owner_day(reservation.owner_id, reservation.day)
        if reservation.key in spend.reserved:
            spend.reserved = {k: v for k, v in spend.reserved.items() if k != reservation.key}
            if call is not None:
                spend.cost_usd += call.cost_usd
            spend.save(update_fields=["reserved", "cost_usd"])
        if call is not None and counted:
            _record_node_call(reservation.node_run_id, call)
        ids = [str(r.pk) for r in line]
        transaction.on_commit(lambda: wake_later(ids, reservation.owner_id))
    if call is not None:
        LLM_TOKENS.labels(call.model, "prompt").inc(call.prompt_tokens)
        LLM_TOKENS.labels(call.model, "completion").inc(call.completion_tokens)
        LLM_TOKENS.labels(call.model, "cached").inc(call.cached_tokens)
        LLM_COST.labels(call.model).inc(call.cost_usd)


def charge_worst_case(reservation: Reservation) -> None:
    """A call that failed but may have reached the provider (``llm.made``), which runs and bills it:
    charged as made, at its worst case, wherever its reservation is still held."""
    release(reservation, at_worst_case(Call(model=reservation.model, errors=[CUT_OFF]), reservation))


def at_worst_case(call: Call, reservation: Reservation) -> Call:
    """``call`` counted at ``reservation``'s worst case, as the provider may bill it."""
    call.prompt_tokens, call.cached_tokens = reservation.prompt_tokens, 0
    call.completion_tokens, call.cost_usd = reservation.max_tokens, reservation.cost_usd
    return call


def _add_usage(usage: dict[str, Any], call: Call) -> None:
    usage_add(usage, {"tokens": call.prompt_tokens + call.completion_tokens, "prompt_tokens": call.prompt_tokens,
                      "completion_tokens": call.completion_tokens, "cached_tokens": call.cached_tokens,
                      "cost_usd": call.cost_usd, "calls": 1})


def _record_node_call(node_run_id: int, call: Call) -> None:
    node_usage = NodeRun.objects.values_list("usage", flat=True).get(pk=node_run_id) or {}
    calls = [*node_usage.get("calls", []), call.as_dict()]
    NodeRun.objects.filter(pk=node_run_id).update(usage={
        "calls": calls,
        "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
        "completion_tokens": sum(c["completion_tokens"] for c in calls),
        "cached_tokens": sum(c["cached_tokens"] for c in calls),
        "cost_usd": round(sum(c["cost_usd"] for c in calls), 8),
        "latency_ms": sum(c["latency_ms"] for c in calls),
    })


def wake(line: list[str], owner_id: int) -> None:
    """A release freed room in the runs of ``line`` (or a node just parked there): the owner's nodes
    paused on a budget whose own line shares one of them go on if their next call fits now (a pause
    is judged against other calls' worst cases, which their actual usage then replaces). Few rows:
    the index holds only nodes paused on a budget. Runs as a task of its own (``agents.wake``), not
    in the agent's executor."""
    ours = set(line)
    paused = [row for row in NodeRun.objects.filter(status=NodeRun.Status.WAITING, wait_reason="budget",
                                                    run__owner_id=owner_id)
              .values_list("pk", "run_id", "node_id", "iteration")
              if ours & set(_line_ids(row[1]))]
    _resume_fitting(paused, released=True)


def wake_later(line: list[str], owner_id: int) -> None:
    """Ask ``agents.wake`` for ``wake``, when the owner has a node paused on a budget at all; a send
    that fails is left to ``agents.sweep``."""
    from agents.tasks import wake as wake_task

    try:
        if NodeRun.objects.filter(status=NodeRun.Status.WAITING, wait_reason="budget", run__owner_id=owner_id).exists():
            wake_task.delay(line, owner_id)
    except Exception:  # the sweep is the backstop; the call itself is journaled
        logger.warning("budget.wake_not_sent", exc_info=True, extra={"run_id": line[0]})


def settle_lapsed(run_id: Any) -> int:
    """Charge the calls ``run_id``'s line reserved whose attempt is no longer running, as the next
    reservation would (``_settle``), in the runs of the line and in the owner's day rows that hold
    them (of whatever day); the number charged. Before, a run that ended with one (cancelled while
    its agent's process lay dead mid-call) kept it reserved, uncharged, for ever (a red-team helper's
    find). Asked ``AOB_LEASE_S`` after the run ended (``settle_later``): a call still in flight then
    (its process alive, its node run cancelled with the run) charges itself as it stops."""
    if not _holds_reservations(run_id):
        return 0  # almost every run: one read, no lock
    with transaction.atomic():
        line = _line(str(run_id))  # child first, then the owner's rows: as ``reserve`` locks them
        keys = {key for each in line for key in ((each.usage or {}).get("reservations") or {})}
        live = _holding(keys)
        lapsed = {key for key in keys if key not in live
                  and _node_run(key) in _node_runs_of(line[0].pk, keys - live)}
        if not lapsed:
            return 0
        for each in line:
            held = (each.usage or {}).get("reservations") or {}
            mine = {k: v for k, v in held.items() if k not in lapsed}
            if len(mine) < len(held):  # its lapsed ones charged, the rest left as they are
                usage = _settle(each, {k: v for k, v in held.items() if k in lapsed}, set())
                usage["reservations"] = mine
                Run.objects.filter(pk=each.pk).update(usage=usage)
        _settle_days(line[0].owner_id, lapsed)
    return len(lapsed)


def _settle_days(owner_id: Any, lapsed: set[str]) -> None:
    """The owner's day rows holding any of ``lapsed``, each charged what it held of them (the day it
    was reserved on, as ``reserve`` charges today's), in the caller's transaction."""
    for spend in (OwnerSpend.objects.select_for_update().filter(owner_id=owner_id, reserved__has_any_keys=sorted(lapsed))
                  .order_by("day")):
        spend.cost_usd += sum(v for k, v in spend.reserved.items() if k in lapsed)
        spend.reserved = {k: v for k, v in spend.reserved.items() if k not in lapsed}
        spend.save(update_fields=["reserved", "cost_usd"])


def settle_later(run_id: Any) -> None:
    """Ask ``agents.settle`` for ``settle_lapsed`` once a call in flight as the run ended has had its
    lease's time to stop and charge itself; only for a run that holds a reservation. A send that
    fails is left to ``sweep_lapsed``."""
    from agents.tasks import settle

    try:
        if _holds_reservations(run_id):
            settle.apply_async(args=[str(run_id)], countdown=broker_countdown(settings.AOB_LEASE_S))
    except Exception:  # the sweep is the backstop
        logger.warning("budget.settle_not_sent", exc_info=True, extra={"run_id": str(run_id)})


def _holds_reservations(run_id: Any) -> bool:
    return Run.objects.filter(pk=run_id, usage__has_key="reservations").exclude(usage__reservations={}).exists()


def _node_run(key: str) -> int:
    """The node run a reservation's key (``<node run>/<attempt>``, or ``<node run>``) names."""
    return int(key.partition("/")[0])


def _node_runs_of(run_id: Any, keys: set[str]) -> set[int]:
    """The node runs among ``keys``' that are ``run_id``'s own: a run settles its own calls, and a
    parent's other children settle theirs."""
    return set(NodeRun.objects.filter(run_id=run_id, pk__in={_node_run(k) for k in keys}).values_list("pk", flat=True))


def sweep_lapsed(limit: int = 100) -> int:
    """The backstop of ``settle_later``: the calls the owners' day rows still hold whose attempt ended
    more than ``AOB_LEASE_S`` ago (a process died between a run's end and its settling, or the
    run goes on and has not reserved since): the finished runs they belong to settle them
    (``settle_lapsed``, ``limit`` runs a pass, in order), and each day row is charged the rest. The
    day rows are few (one an owner and day), and only those holding a reservation are read."""
    held: dict[Any, set[str]] = {}
    for owner_id, reserved in OwnerSpend.objects.exclude(reserved={}).values_list("owner_id", "reserved"):
        held.setdefault(owner_id, set()).update(reserved)
    keys = {key for owned in held.values() for key in owned}
    ended = timezone.now() - timedelta(seconds=settings.AOB_LEASE_S)
    recent = set(NodeRun.objects.filter(pk__in={_node_run(k) for k in keys}, finished_at__gt=ended)
                 .values_list("pk", flat=True))
    lapsed = {key for key in keys - _holding(keys) if _node_run(key) not in recent}
    if not lapsed:
        return 0
    runs = list(NodeRun.objects.filter(pk__in={_node_run(k) for k in lapsed}, run__status__in=Run.FINISHED)
                .order_by("run_id").values_list("run_id", flat=True).distinct()[:limit])
    charged = sum(settle_lapsed(run_id) for run_id in runs)
    for owner_id, owned in held.items():
        still = (owned & lapsed) - _holding(owned & lapsed)  # judged again: a settle above may have taken some
        if still:
            with transaction.atomic():
                _settle_days(owner_id, still)
    return charged


_swept_after = 0  # this process's sweep cursor: each sweep goes on past the last node run it judged


def sweep_paused(*, older_than_s: float, limit: int = 100) -> int:
    """The backstop of ``wake``: a process that died between a release's commit and its wake (or a
    wake that failed) leaves a node paused whose call fits. Nodes whose paused attempt started more
    than ``older_than_s`` ago are judged again, by the same rule, ``limit`` at a time, round the
    whole set over successive sweeps; the number resumed."""
    global _swept_after
    since = timezone.now() - timedelta(seconds=older_than_s)
    paused = NodeRun.objects.filter(status=NodeRun.Status.WAITING, wait_reason="budget", started_at__lt=since)
    fields = ("pk", "run_id", "node_id", "iteration")
    batch = list(paused.filter(pk__gt=_swept_after).order_by("pk").values_list(*fields)[:limit])
    if len(batch) < limit:  # round again from the start
        batch += list(paused.filter(pk__lte=_swept_after).order_by("pk").values_list(*fields)[:limit - len(batch)])
    _swept_after = batch[-1][0] if batch else 0
    return _resume_fitting(batch, released=False)


def _resume_fitting(paused: list[tuple[int, Any, str, int]], *, released: bool) -> int:
    from workflows.services.runs import run_budget_wake

    fitting: dict[str, list[int]] = {}
    # a deactivated owner raises nothing: their nodes that only a raise could move go on, to fail saying
    # so (``loop._pause``) instead of waiting for ever
    unraisable = {str(pk) for pk in Run.objects.filter(pk__in={row[1] for row in paused}, owner__is_active=False)
                  .values_list("pk", flat=True)} if paused else set()
    for pk, run_id, node_id, iteration in paused:
        # one row must not stop the others (the sweeps' rule: said on its run, in the end failing it)
        with poison.sweep_row("budget_wake", run_id=run_id, node_id=node_id, node_run_id=pk) as taken:
            if not taken:
                continue  # its handling killed the process too often (poison.sweep_row)
            pause = _last_pause(run_id, node_id, iteration)
            following = _next_call(pause)
            if (following is None or (str(run_id) in unraisable and only_a_raise(pause))
                    or fits_now(run_id=str(run_id), tokens=following["tokens"], cost=following["cost_usd"],
                                node_budget=pause.get("node_budget"))):
                fitting.setdefault(str(run_id), []).append(pk)
    if fitting:
        run_budget_wake(node_runs=fitting, released=released)
    return sum(len(pks) for pks in fitting.values())


def _last_pause(run_id: Any, node_id: str, iteration: int) -> dict[str, Any]:
    """The node run's last pause, as its ``node_paused`` event keeps it."""
    return (Event.objects.filter(run_id=run_id, type=Event.Type.NODE_PAUSED, node_id=node_id,
                                 data__iteration=iteration)
            .order_by("-seq").values_list("data", flat=True).first()) or {}


def _next_call(pause: dict[str, Any]) -> dict[str, Any] | None:
    """The worst case a pause could not fit."""
    following = pause.get("next_call")
    return following if isinstance(following, dict) and {"tokens", "cost_usd"} <= set(following) else None

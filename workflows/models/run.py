from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from .artifact import Artifact

# A run's ``usage``: these counts and ``cost_usd``, added up by one rule (``usage_add``).
USAGE_COUNTS = ("tokens", "prompt_tokens", "completion_tokens", "cached_tokens", "calls")


def usage_add(usage: dict[str, Any], more: dict[str, Any]) -> None:
    """Add ``more`` (one call's spend, or a child run's whole ``usage``) to a run's ``usage``."""
    for key in USAGE_COUNTS:
        usage[key] = usage.get(key, 0) + more.get(key, 0)
    usage["cost_usd"] = round(usage.get("cost_usd", 0.0) + more.get("cost_usd", 0.0), 8)


class Run(models.Model):
    """One execution of a frozen workflow version; ``current`` is that version plus its run patches."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_FOR_APPROVAL = "waiting_for_approval"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    WITHIN = "within_run"  # the ``budget`` key naming the run this one's spend also counts against

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own for ``owner``: ``run_owner_created`` leads with it.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs",
                              db_index=False)
    workflow = models.ForeignKey("workflows.Workflow", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="runs", db_index=False)  # run_workflow_created leads with it
    tag = models.CharField(max_length=200, blank=True, default="")
    base_artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+", db_index=False)
    current_artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+", db_index=False)
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    inputs = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)
    event_seq = models.PositiveIntegerField(default=0)
    patch_seq = models.PositiveIntegerField(default=0)
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")
    replay_from_node = models.CharField(max_length=200, blank=True, default="")
    # When a delete (a prune's, its owner's) first removed rows of this finished run. Its rows go a
    # chunk per transaction, so a run left half-deleted (the time ran out, the process died) is
    # marked: a replay of it is refused, as it would run again what the missing rows did.
    deleting_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A replay whose agent nodes reuse the source run's recorded model responses while their
    # conversation matches it (no call, no cost); see agents/journal.py.
    reuse_llm = models.BooleanField(default=False, db_default=False)
    # The inputs' size in bytes as stored (UTF-8 canonical JSON), measured once, when the run starts
    # (``services.runs.run_start``): every answer and event that carries them or their marker
    # judges them by it (``answers.run_inputs_within``, ``selectors.run_get``, the lists). Signed:
    # run_get's compiled read binds its budget in a probe's place, a negative number that a
    # positive field's lookup would fold into "nothing matches" at compile time.
    inputs_bytes = models.BigIntegerField(default=0, db_default=0)
    usage = models.JSONField(default=dict, blank=True)  # what its agents spent: USAGE_COUNTS, cost_usd (usage_add)
    # The run's spend ceilings as its owner raised them ({max_tokens, max_cost_usd}); unset keys
    # fall back to the operator's AOB_RUN_MAX_TOKENS / AOB_RUN_MAX_COST_USD. A run whose spend also
    # counts against another run's ceilings (a sub-workflow's parent) names it under ``WITHIN``.
    budget = models.JSONField(default=dict, blank=True)
    # Agent nodes patches have added to this run: the spawn limit counts these, and removing a
    # node gives nothing back.
    spawned_agents = models.PositiveIntegerField(default=0)
    # The ``metadata.allowed_hosts`` lists of the runs above this one (a sub-workflow's parent, and
    # theirs), each binding its requests beside its own (``workflows.egress``); None for a top run.
    hosts_above = models.JSONField(null=True, blank=True, default=None)
    # The strictest agent rules of the runs above ({patch_policy, max_agent_nodes}, each when one of
    # them sets it: ``patches.policy.rules_handed_down``; ``{}``: none), binding beside its own; None
    # for a top run, and for a child the code before it started: read through ``runs.run_rules_above``.
    rules_above = models.JSONField(null=True, blank=True, default=None)
    # Whose Idempotency-Key its requests carry where not its own (``key_run``): a replay's node that
    # goes on with its source's unsettled work, under "<node_id>/<iteration>" (``run_replay``), and a
    # sub-workflow's every node, under "", named by the node that started it (``run_workflow``): the
    # same work is the same request outside. None: its own, as the runs before the column.
    key_origins = models.JSONField(null=True, blank=True, default=None)
    request_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A definition's ``metadata.output`` is computed once, by a worker, after the run completes
    # (``services.runs.run_output_store``); answers read what it stored, never evaluate it. Until
    # then ``output_asked_at`` says when a worker was last asked for it (the sweeper asks again past
    # AOB_OUTPUT_TIME_LIMIT_S); then the output's artifact, or why it could not be computed.
    output_asked_at = models.DateTimeField(null=True, blank=True)
    output_asks = models.PositiveSmallIntegerField(default=0, db_default=0)  # the sweeper's asks so far
    output_artifact = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                        db_index=False)
    output_error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Plain b-tree indexes only (a ``db_index`` on a text column or a key to one adds a second,
        # ``LIKE`` index nothing queries), and none a longer one already leads with: every index is
        # written on each insert and on each update that moves an indexed column (issue 20).
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="run_owner_created"),
            # a workflow's newest run (``selectors.with_last_run``): by the key's own index, the planner
            # walked every tenant's runs by time, per workflow (4.6 s a list at 200,000 of another's)
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
            models.Index(fields=["status"], name="run_status"),
            models.Index(fields=["base_artifact"], name="run_base_artifact"),
            models.Index(fields=["current_artifact"], name="run_current_artifact"),
            # partial: only the runs with a stored output, and those whose output is still to compute
            models.Index(fields=["output_artifact"], name="run_output_artifact",
                         condition=models.Q(output_artifact__isnull=False)),
            models.Index(fields=["output_asked_at"], name="run_output_asked",
                         condition=models.Q(output_asked_at__isnull=False)),
            # partial: an owner's unfinished runs, whose bytes a start adds to its finished runs'
            # (``workflows.storage``); a start never reads the owner's finished runs one by one
            models.Index(fields=["owner"], name="run_owner_unfinished",
                         condition=models.Q(status__in=["queued", "running", "waiting_for_approval"])),
        ]

    def __str__(self) -> str:
        return f"run {self.id} ({self.tag or 'ad hoc'})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @staticmethod
    def key_run(run_id: Any, key_origins: dict[str, str] | None, node_id: str, iteration: int) -> str:
        """The run whose name a node run's Idempotency-Keys carry (``workers.http.idempotency``):
        its own, but where ``key_origins`` names another for it (the source's unsettled work a
        replay goes on with) or for the whole run (a sub-workflow's: named by its parent's node)."""
        origins = key_origins or {}
        return origins.get(Run.origin(node_id, iteration)) or origins.get("") or str(run_id)

    @staticmethod
    def goes_on(key_origins: dict[str, str] | None, node_id: str, iteration: int) -> bool:
        """Whether a node run goes on with another run's work that did not settle, under that run's
        key (a replay's ``key_origins`` entry for it): its attempts there, their outcome unknown,
        came before its own (an answer to it is not ``answered``: workers/executors/http.py)."""
        return Run.origin(node_id, iteration) in (key_origins or {})

    @staticmethod
    def origin(node_id: str, iteration: int) -> str:
        """A node run's entry in ``key_origins`` (``run_replay`` writes them)."""
        return f"{node_id}/{iteration}"

    @staticmethod
    def going_on_nodes(key_origins: dict[str, str] | None) -> set[str]:
        """The nodes with a node run that goes on with another run's unsettled work (``goes_on``):
        its ``origin`` entries, not a sub-workflow's whole-run "" (the iteration is after the last "/")."""
        return {origin.rpartition("/")[0] for origin in key_origins or {} if origin}

    @property
    def output_pending(self) -> bool:
        """Completed, and its ``metadata.output`` not stored yet (``output_asked_at`` is set)."""
        return self.output_asked_at is not None

    @property
    def shown_ceilings(self) -> dict[str, Any]:
        """``ceilings`` as an answer shows them: without the run above's id where the reader may not
        see that run (``selectors.run_get`` says, ``within_hidden``)."""
        ceilings = self.ceilings
        if getattr(self, "within_hidden", False):
            ceilings[self.WITHIN] = None
        return ceilings

    @property
    def ceilings(self) -> dict[str, Any]:
        """The run's LLM spend ceilings: what its owner set, else the operator's. A run whose spend
        counts against another's (a sub-workflow's, ``within``) has none of its own unless its
        owner set one (null): the ceilings of the runs above bind it as they stand. It names the
        run above under ``WITHIN``."""
        if self.within:
            return {"max_tokens": self.budget.get("max_tokens"), "max_cost_usd": self.budget.get("max_cost_usd"),
                    self.WITHIN: self.within}
        return {"max_tokens": self.budget.get("max_tokens", settings.AOB_RUN_MAX_TOKENS),
                "max_cost_usd": self.budget.get("max_cost_usd", settings.AOB_RUN_MAX_COST_USD)}

    @property
    def within(self) -> str | None:
        """The run whose ceilings this run's spend also counts against, if any (agents.budget)."""
        return (self.budget or {}).get(self.WITHIN)


class ValuesJSONField(models.JSONField):
    """A JSON column a many-row insert sends as one parameter per value (``VALUES``), not through
    Django 5.2's ``UNNEST`` of one array per column: psycopg writes that array as a literal, escaping
    every quote of every value with a Python callback, so twenty node runs of a 15 MB output took a
    decision 30 s (a red team's find), where ``VALUES`` sends each value as it is. Any field with a
    ``get_placeholder`` keeps the insert off ``UNNEST``. It deconstructs as the plain field: nothing
    in the table or its migrations differs."""

    def get_placeholder(self, value: Any, compiler: Any, connection: Any) -> str:
        return "%s"

    def deconstruct(self) -> Any:
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


class NodeRunQuerySet(models.QuerySet["NodeRun"]):
    def bulk_create(self, objs: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """In statements of at most ``PARAMETERS_MAX`` parameters: each value is its own parameter
        (``ValuesJSONField``), and PostgreSQL takes at most 65,535 in one statement (a replay's
        10,000 reused node runs are 270,000)."""
        most = PARAMETERS_MAX // len(self.model._meta.concrete_fields)
        return super().bulk_create(objs, batch_size=min(batch_size or most, most), **kwargs)


# The most parameters one statement carries (PostgreSQL's protocol: 65,535).
PARAMETERS_MAX = 65_535


class NodeRun(models.Model):
    """A token: one scheduled execution of one node; ``(run, node_id, iteration)`` is unique, so
    emitting it twice is a no-op."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting"
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.WAITING)
    # What a queued or waiting node run waits for, in words, by its ``wait_reason``: the one wording
    # the run's details and timeline answer (``waiting_for``), which the pages and the CLI show.
    WAITING_FOR = {
        "approval": "a person's decision (its approval)",
        "budget": "room in a budget: its next model call does not fit yet (its node_paused event says whose and why)",
        "workflow": "its child run to finish",
        "worker": "a worker: none running consumes its queue (its node_unserved event names it)",
        "slot": "a slot: its owner runs as many nodes of its type as allowed",
        "unclaimed": "a worker to claim it (sent again under a new id)",
    }
    FINISHED = (Status.COMPLETED, Status.FAILED, Status.SKIPPED, Status.CANCELLED)
    RAN = (Status.RUNNING, Status.WAITING, Status.COMPLETED, Status.FAILED)

    # No index of its own for ``run``: ``node_run_token_unique`` leads with it.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="node_runs", db_index=False)
    node_id = models.CharField(max_length=200)
    iteration = models.PositiveIntegerField(default=0)
    node_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    input = ValuesJSONField(null=True, blank=True)
    output = ValuesJSONField(null=True, blank=True)
    output_artifact = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                        db_index=False)
    error = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True)
    # Targets of the edges this node's decision took; None until the coordinator consumed it.
    taken = models.JSONField(null=True, blank=True)
    consumed = models.BooleanField(default=False)
    reused = models.BooleanField(default=False)
    queued_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    available_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    # Why a ``waiting`` node run waits: a person's decision (approval) or its run's budget; why a
    # ``queued`` one does: no worker serves its queue (``worker``), or its owner runs as many of its
    # type as it may (``slot``: workflows/engine/admission.py).
    wait_reason = models.CharField(max_length=16, blank=True, default="", db_default="")
    # The owner whose slot a node run held for one waits for (``wait_reason`` ``slot``), so a
    # release finds it by owner without reading the runs; no foreign key: nothing is checked per write.
    held_for = models.IntegerField(null=True, blank=True)
    # A park whose coordinator decision has not run yet, since when: set in the park's transaction,
    # cleared by that decision (it settles the run, e.g. ``waiting_for_approval``). The sweeper asks
    # the coordinator again for a ``waiting`` node run still marked past its deadline (the executor
    # died between the park's commit and the publish of its linked coordinator message). Read only
    # while the node run waits: whatever moves it on is routed by a decision of its own.
    undecided_since = models.DateTimeField(null=True, blank=True)
    # The sizes of ``input``, ``output`` and ``attempt_log`` as the answers measure them (bytes of
    # their text, ``answers.stored_bytes``), set by the database when one is written (the trigger
    # of migration 0020) so that no answer renders a value to measure it; None in rows written
    # before it, which are measured as before (``selectors._sizes``).
    input_bytes = models.BigIntegerField(null=True, blank=True, editable=False)
    output_bytes = models.BigIntegerField(null=True, blank=True, editable=False)
    attempt_log_bytes = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = NodeRunQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id", "iteration"], name="node_run_token_unique"),
        ]
        # As ``Run``'s: no ``LIKE`` twins, nothing a longer index leads with. A node run is inserted
        # and updated three times per step, each update writing every index.
        indexes = [
            models.Index(fields=["output_artifact"], name="node_run_output_artifact"),
            models.Index(fields=["status", "dispatched_at"], name="node_run_sweep",
                         condition=models.Q(status__in=["queued", "running"])),
            models.Index(fields=["finished_at"], name="node_run_unconsumed",
                         condition=models.Q(consumed=False, status__in=["completed", "failed", "skipped"])),
            # nodes paused on a budget, for a release's wake and agents.sweep; holds only those
            models.Index(fields=["run"], name="node_run_budget_paused",
                         condition=models.Q(status="waiting", wait_reason="budget")),
            # node runs held for a slot, by owner and type in queue order (admission.released); holds
            # only those, so no ordinary step writes it
            models.Index(fields=["held_for", "node_type", "queued_at", "id"], name="node_run_held",
                         condition=models.Q(status="queued", wait_reason="slot")),
            # the sweeper's look for undecided parks; holds only those, so no ordinary step writes it
            models.Index(fields=["undecided_since"], name="node_run_undecided",
                         condition=models.Q(status="waiting", undecided_since__isnull=False)),
            # the waiting ones by type, for /metrics' gauge (aob_project/scrape.py; with node_run_sweep
            # for the queued and running); written only when a node run parks
            models.Index(fields=["node_type"], name="node_run_waiting", condition=models.Q(status="waiting")),
        ]
        ordering = ["run_id", "queued_at", "id"]

    def __str__(self) -> str:
        return f"{self.node_id}#{self.iteration} ({self.status})"

    @classmethod
    def begun(cls, status: str, attempts: int) -> bool:
        """Whether a node run has begun: it ran (or runs, or waits in its node), or made an attempt.
        One queued again for its retry (or after its worker was lost, or woken from a budget pause)
        has begun too: it may have sent its request, and its next attempt's is a repeat of that, under
        the same key. What a patch may no longer change (``history_immutable``), and what of an
        approved action has begun."""
        return status in cls.RAN or attempts > 0

    @classmethod
    def acted(cls, status: str, attempts: int, given_back: int, unsent: int) -> bool:
        """Whether a node run may have acted outside: it began, and not every try it made failed
        before anything was sent (``sent``: false: its secret missing, the node run moved, a child
        not started, the owner's run limits). Its tries are its claims less those given back unrun
        (``given_back``: ``execution.given_back`` of its ``attempt_log``; a claim paused on a budget
        counts: an agent may have acted before it paused), ``unsent`` those of them its log records
        so failed (``execution.unsent``). One that did not may still be a link in a chain of replays,
        not its end: a run before it in the chain may have sent its request (``idempotency.last_acted``
        looks past it)."""
        tried = attempts - given_back
        return cls.begun(status, tried) and not (tried > 0 and unsent >= tried)

    @classmethod
    def unsettled(cls, status: str, attempts: int, error: Any) -> bool:
        """Whether a node run began and did not settle: what came of its work outside is unknown
        here, or known only to the remote (it runs, waits, is queued again after an attempt, or
        failed without its remote's answer: a timeout, a dropped connection, a lost worker, a 5xx,
        an agent's or a child's failure after calls that took effect). One that failed with the
        remote's own answer to its request (``answered``: an http node's 402, workers/executors/http.py)
        settled: sent again it is new work. What a replay goes on with under its source's keys."""
        answered = status == cls.Status.FAILED and isinstance(error, dict) and error.get("answered") is True
        return cls.begun(status, attempts) and status != cls.Status.COMPLETED and not answered

    @classmethod
    def waiting_for(cls, status: str, wait_reason: str) -> str:
        """What a node run in ``status`` waits for, in words; "" when it waits for nothing named."""
        if status not in (cls.Status.QUEUED, cls.Status.WAITING) or not wait_reason:
            return ""
        return cls.WAITING_FOR.get(wait_reason, wait_reason)


class RunPatch(models.Model):
    """RFC 6902 operations against a run's current definition; never touches the workflow tag."""

    class Status(models.TextChoices):
        APPLIED = "applied"
        PENDING_APPROVAL = "pending_approval"
        REJECTED = "rejected"
        NOOP = "noop"  # an empty patch: answered, never stored

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="patches")
    seq = models.PositiveIntegerField()
    operations = models.JSONField()
    # How many operations, kept when the patch is written (``run_patch_propose``): a list of patches
    # reads it, never the operations (up to 1 MiB a patch). Null: written by a process on the code
    # before 0039 (a rolling deploy), counted when listed.
    op_count = models.PositiveIntegerField(null=True, blank=True)
    description = models.TextField(blank=True, default="")
    node_id = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=20, choices=Status.choices)
    patch_artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    before_artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    after_artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reason = models.TextField(blank=True, default="")
    # An agent's proposal names its node run, attempt and turn, so a resumed attempt that proposes
    # the same patch again gets the one it made instead of a second copy.
    proposal_key = models.CharField(max_length=120, blank=True, default="")
    # What the patch changed, once applied (``patches.provenance.patch_wrote``): which nodes and
    # edges an agent wrote is read from it, to keep an agent's text out of other agents' prompts.
    # The database default lets a process still on the code before 0021 insert a patch without it.
    wrote = models.JSONField(default=dict, blank=True, db_default=models.Value({}, models.JSONField()))
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="run_patch_seq_unique"),
            models.UniqueConstraint(fields=["run", "proposal_key"], name="run_patch_proposal_unique",
                                    condition=~models.Q(proposal_key="")),
        ]
        # the patches waiting for a person, for /metrics' gauge (aob_project/scrape.py); holds only those
        indexes = [models.Index(fields=["run"], name="run_patch_pending", condition=models.Q(status="pending_approval"))]
        ordering = ["run_id", "seq"]

    def __str__(self) -> str:
        return f"patch {self.seq} of {self.run_id}"


class ReplayProvenance(models.Model):
    """What a replay inherits of its source's provenance (``patches.provenance``), stored when it
    starts (``replay_inherits``): the version its oldest source started from (the author's, which
    the patch policy and an approver judge against) and who wrote what of the definition it starts
    from. A replay's history is never read through ``replay_of``: a source may be deleted (by its
    owner, by a prune) once nothing unfinished replays it directly, and its link goes null; a chain
    followed through it stopped there, and what the source's agents wrote became the author's."""

    run = models.OneToOneField(Run, primary_key=True, on_delete=models.CASCADE, related_name="inherited")
    authored_base = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    nodes = models.JSONField(default=dict)  # node id -> the agent node that last wrote it (``Written.nodes``)
    edges = models.JSONField(default=dict)  # edge key -> the agent node that last wrote it (``Written.edges``)
    # node id -> the step as a person's patch last set it (``Written.persons``, read out of the
    # definitions those patches left, which go with the source)
    persons = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"provenance inherited by {self.run_id}"


class PatchRefusal(models.Model):
    """A patch the policy refused: nothing of it reached the run. Kept apart from the run's patches
    and events, for the run page and the admin (who tried what, and which rule stopped it)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="patch_refusals")
    node_id = models.CharField(max_length=200, blank=True, default="")
    agent = models.BooleanField(default=False)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    rule = models.CharField(max_length=64)
    op = models.PositiveIntegerField(null=True, blank=True)
    path = models.CharField(max_length=1000, blank=True, default="")
    message = models.TextField()
    operations = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run", "-created_at"], name="patch_refusal_run")]

    def __str__(self) -> str:
        return f"refused patch ({self.rule}) of {self.run_id}"

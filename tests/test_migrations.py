"""The models and their migrations agree: a model change without its migration (an ``on_delete``
changed by hand included) is found here, not on a deploy."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.django_db
def test_every_model_change_has_its_migration() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        pytest.fail(f"models differ from their migrations (exit {exc.code}):\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_the_inputs_size_backfill_measures_runs_started_before_in_batches() -> None:
    """Runs started before ``Run.inputs_bytes`` get the database's measure of their inputs, a
    batch of 1,000 rows at a time until none is left (each batch its own transaction in the
    migration); runs with no inputs are left at 0."""
    import importlib
    from types import SimpleNamespace

    from django.contrib.auth.models import User
    from django.db import connection

    from workflows.models import Artifact, Run

    backfill = importlib.import_module("workflows.migrations.0015_run_inputs_bytes_backfill").backfill
    owner = User.objects.create_user("old-runs")
    artifact = Artifact.objects.create(id="sha256:old", kind="dag_version", content={"nodes": []}, size_bytes=14)
    Run.objects.bulk_create([Run(owner=owner, base_artifact=artifact, current_artifact=artifact,
                                 inputs={"n": i, "s": "é"}) for i in range(1100)]
                            + [Run(owner=owner, base_artifact=artifact, current_artifact=artifact, inputs={})])

    backfill(None, SimpleNamespace(connection=connection))

    sizes = {run.inputs.get("n"): run.inputs_bytes for run in Run.objects.all()}
    assert sizes[None] == 0  # no inputs
    assert sizes[7] == len('{"n": 7, "s": "é"}'.encode()) and sizes[1099] == len('{"n": 1099, "s": "é"}'.encode())
    assert not Run.objects.filter(inputs_bytes=0).exclude(inputs={}).exists()


@pytest.mark.django_db
def test_the_kept_bytes_backfill_counts_what_runs_from_before_kept_and_moves_their_owner_s_figure() -> None:
    """Runs from before 0032 kept their node runs' inputs and their computed output counted nowhere
    in ``AOB_OWNER_STORAGE_BYTES``; the backfill measures them as the engine now counts them (the
    database's measure of each input, the output's artifact size), and a finished run's new sum
    moves its owner's figure through the trigger."""
    import importlib
    from types import SimpleNamespace

    from django.contrib.auth.models import User
    from django.db import connection

    from tests.conftest import stored_run
    from workflows.models import Artifact, NodeRun, Run
    from workflows.storage import owner_stored_bytes

    backfill = importlib.import_module("workflows.migrations.0033_run_kept_bytes_backfill").backfill
    owner = User.objects.create_user("old-kept")
    finished, running = stored_run(owner), stored_run(owner)
    output = Artifact.objects.create(id="sha256:old-output", kind="node_io", content={"x": 1}, size_bytes=500)
    node_runs = [NodeRun.objects.create(run=run, node_id="a", node_type="transform", status="completed",
                                        input={"big": "z" * 1_000}) for run in (finished, running)]
    Run.objects.filter(pk=finished.pk).update(status="completed", inputs_bytes=10, usage={"output_bytes": 5},
                                              output_artifact=output)
    assert owner_stored_bytes(owner.pk) == 15

    backfill(None, SimpleNamespace(connection=connection))

    input_bytes = NodeRun.objects.get(pk=node_runs[0].pk).input_bytes
    assert input_bytes == len('{"big": "' + "z" * 1_000 + '"}')
    assert Run.objects.get(pk=finished.pk).usage == {"output_bytes": 5, "kept_bytes": input_bytes + 500}
    assert Run.objects.get(pk=running.pk).usage == {"kept_bytes": input_bytes}
    assert owner_stored_bytes(owner.pk) == 15 + (input_bytes + 500) + input_bytes


@pytest.mark.django_db
def test_a_second_live_vote_of_a_renamed_person_is_voided_before_the_one_per_person_rule() -> None:
    """Before ``decision_one_per_person`` a rename let one person cast two live votes; the migration
    voids the later one (kept, as voided decisions are), so the rule can be added over old data."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import User
    from django.db import connection

    from approvals.models import Approval, Decision
    from workflows.models import Artifact, Run

    void_second_votes = importlib.import_module("approvals.migrations.0006_decision_one_per_person").void_second_votes
    owner, voter, other = (User.objects.create_user(name) for name in ("owner", "voter", "other"))
    artifact = Artifact.objects.create(id="sha256:gate", kind="dag_version", content={"nodes": []}, size_bytes=14)
    run = Run.objects.create(owner=owner, base_artifact=artifact, current_artifact=artifact)
    approval = Approval.objects.create(run=run, node_id="review", approvers=["finance"], required_approvals=2)
    with connection.cursor() as cursor:  # the data as it could be before the rule (rolled back with the test)
        cursor.execute("DROP INDEX decision_one_per_person")
    first = Decision.objects.create(approval=approval, user=voter, username="voter", approve=True)
    second = Decision.objects.create(approval=approval, user=voter, username="voter.renamed", approve=True)
    others = Decision.objects.create(approval=approval, user=other, username="other", approve=True)

    void_second_votes(apps, None)

    assert {d.pk: d.voided for d in Decision.objects.all()} == {first.pk: False, second.pk: True, others.pk: False}


@pytest.mark.django_db
def test_an_approval_escalated_before_the_rule_says_its_next_deadline_rejects() -> None:
    """Escalated approvals kept ``on_timeout: escalate`` (and every reader said "then escalate"
    while the next deadline rejected); the migration stores what it will do."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import User
    from django.utils import timezone

    from approvals.models import Approval
    from tests.conftest import stored_run

    escalated_reject = importlib.import_module("approvals.migrations.0008_escalated_on_timeout").escalated_reject
    run = stored_run(User.objects.create_user("owner"))
    Approval.objects.create(run=run, node_id="a", on_timeout="escalate", escalated=True, deadline=timezone.now())
    Approval.objects.create(run=run, node_id="b", on_timeout="escalate", escalated=True)
    Approval.objects.create(run=run, node_id="c", on_timeout="escalate", deadline=timezone.now())

    escalated_reject(apps, None)

    assert dict(Approval.objects.values_list("node_id", "on_timeout")) == {"a": "reject", "b": "", "c": "escalate"}


@pytest.mark.django_db
def test_a_webhook_delivery_still_waiting_goes_to_each_target_as_its_own() -> None:
    """One webhook delivery was sent to each of its person's targets in turn; the migration gives a
    waiting one its first enabled target and a copy of itself for each further one, and leaves an
    ended one (and a disabled target) alone."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import User

    from approvals.models import Approval, Delivery, NotificationTarget
    from tests.conftest import stored_run

    one_target_each = importlib.import_module("approvals.migrations.0010_delivery_target").one_target_each
    bob = User.objects.create_user("bob")
    first, off, second = (NotificationTarget.objects.create(user=bob, webhook_url=f"https://chat.example/{n}",
                                                            enabled=n != "off") for n in ("first", "off", "second"))
    approval = Approval.objects.create(run=stored_run(User.objects.create_user("owner")), node_id="a")
    waiting = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="webhook", attempts=2)
    ended = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="webhook", status="sent")
    mail = Delivery.objects.create(approval=approval, user=bob, recipient="bob", channel="email")

    one_target_each(apps, None)

    rows = {(d.pk if d.pk in (waiting.pk, ended.pk, mail.pk) else "copy", d.target_id, d.attempts, d.status)
            for d in Delivery.objects.all()}
    assert rows == {(waiting.pk, first.pk, 2, "pending"), ("copy", second.pk, 0, "pending"),
                    (ended.pk, None, 0, "sent"), (mail.pk, None, 0, "pending")}
    assert off.pk not in {d.target_id for d in Delivery.objects.all()}


@pytest.mark.django_db
def test_the_patch_provenance_backfill_measures_the_patches_of_runs_still_going() -> None:
    """Patches applied before ``RunPatch.wrote`` get what they changed, measured along the run's
    chain of patches, for runs still going; a finished run's are left as they are."""
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.contrib.auth.models import User

    from tests.conftest import stored_run
    from workflows.models import NodeRun, Run, RunPatch
    from workflows.services.patches import run_patch_propose

    backfill = importlib.import_module("workflows.migrations.0022_run_patch_wrote_backfill").backfill
    owner = User.objects.create_user("old-patches")
    plan = {"id": "plan", "type": "agent", "config": {"task": "t"}}
    runs = [stored_run(owner, {"nodes": [plan], "edges": []}) for _ in range(2)]
    for run in runs:
        NodeRun.objects.create(run=run, node_id="plan", node_type="agent", status="running", iteration=0, attempts=1)
        Run.objects.filter(pk=run.pk).update(status="running")
        for node_id in ("a", "b"):
            run_patch_propose(run=Run.objects.get(pk=run.pk), node_id="plan", from_agent=True, operations=[
                {"op": "add", "path": "/nodes/-", "value": {"id": node_id, "type": "transform",
                                                            "config": {"expression": "1"}}},
                {"op": "add", "path": "/edges/-", "value": {"from": "plan", "to": node_id}}])
    kept = {p.pk: p.wrote for p in RunPatch.objects.all()}
    Run.objects.filter(pk=runs[1].pk).update(status="completed")
    RunPatch.objects.update(wrote={})

    backfill(apps, SimpleNamespace())

    assert {p.pk: p.wrote for p in RunPatch.objects.filter(run=runs[0])} == {
        pk: wrote for pk, wrote in kept.items() if RunPatch.objects.get(pk=pk).run_id == runs[0].pk}
    assert [p.wrote["added"] for p in RunPatch.objects.filter(run=runs[0]).order_by("seq")] == [["a"], ["b"]]
    assert all(p.wrote == {} for p in RunPatch.objects.filter(run=runs[1]))


@pytest.mark.django_db
def test_the_op_count_backfill_counts_the_operations_of_patches_from_before_in_batches() -> None:
    """Patches stored before ``RunPatch.op_count`` get their operations counted, a batch of 1,000
    at a time until none is left (each its own transaction in the migration); a patch whose
    operations are no list (none is stored so) counts 0."""
    import importlib
    from types import SimpleNamespace

    from django.contrib.auth.models import User
    from django.db import connection

    from tests.conftest import stored_run
    from workflows.models import RunPatch

    backfill = importlib.import_module("workflows.migrations.0039_run_patch_op_count").count_operations
    run = stored_run(User.objects.create_user("old-patches"))
    at = run.base_artifact_id
    RunPatch.objects.bulk_create([RunPatch(run=run, seq=seq, operations=[{"op": "test", "path": "", "value": 1}] * (
        seq % 3), status="applied", patch_artifact_id=at, before_artifact_id=at, after_artifact_id=at)
        for seq in range(1, 1102)] + [RunPatch(run=run, seq=1102, operations={"op": "test"}, status="applied",
                                               patch_artifact_id=at, before_artifact_id=at, after_artifact_id=at)])

    backfill(None, SimpleNamespace(connection=connection))

    counts = dict(RunPatch.objects.values_list("seq", "op_count"))
    assert counts[1] == 1 and counts[2] == 2 and counts[3] == 0 and counts[1100] == 2 and counts[1102] == 0
    assert not RunPatch.objects.filter(op_count=None).exists()


@pytest.mark.django_db
def test_the_op_count_backfill_reads_each_patch_a_bounded_number_of_times() -> None:
    """The backfill pages through the patches by id: finding each batch reads about that batch's
    share of the table, not again every patch the batches before it counted (20,000 patches read
    12,888 pages of a 2,858-page table when each batch looked for the first 1,000 with no count)."""
    import importlib
    import json
    from types import SimpleNamespace

    from django.contrib.auth.models import User
    from django.db import connection

    from tests.conftest import stored_run
    from workflows.models import RunPatch

    backfill = importlib.import_module("workflows.migrations.0039_run_patch_op_count").count_operations
    run = stored_run(User.objects.create_user("many-patches"))
    at = run.base_artifact_id
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workflows_runpatch (run_id, seq, operations, description, node_id, status, reason, "
            "proposal_key, patch_artifact_id, before_artifact_id, after_artifact_id, created_at, wrote) "
            "SELECT %s, g, '[{\"op\": \"test\", \"path\": \"\", \"value\": 1}]'::jsonb, '', '', 'applied', "
            "'', '', %s, %s, %s, now(), '{}'::jsonb FROM generate_series(1, 20000) g", [run.pk, at, at, at])
        cursor.execute("SELECT pg_relation_size('workflows_runpatch') / current_setting('block_size')::int")
        [table_pages] = cursor.fetchone()
    pages = []

    def explained(execute, sql, params, many, context):
        # every statement the backfill runs, measured in a savepoint rolled back, then run as it was
        # (on the driver's cursor: this wrapper wraps Django's)
        with connection.connection.cursor() as c:
            c.execute("SAVEPOINT measured")
            c.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
            [plan] = c.fetchone()
            c.execute("ROLLBACK TO SAVEPOINT measured")
        pages.append(_patch_pages_scanned((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explained):
        backfill(None, SimpleNamespace(connection=connection))

    assert not RunPatch.objects.filter(op_count=None).exists()
    # each patch's page (and the id index beside it) a few times in all, however many batches
    assert sum(pages) <= 3 * table_pages, (sum(pages), table_pages, pages)


def _patch_pages_scanned(node: dict) -> int:
    """Page accesses (hit or read) of the plan's scans of workflows_runpatch, each node's own."""
    def accessed(n: dict) -> int:
        return n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0)
    children = node.get("Plans", [])
    own = accessed(node) - sum(accessed(c) for c in children)
    scans = "Scan" in node["Node Type"] and node.get("Relation Name") == "workflows_runpatch"
    return (own if scans else 0) + sum(_patch_pages_scanned(c) for c in children)


@pytest.mark.django_db
def test_a_process_still_on_the_code_before_0021_can_store_a_patch() -> None:
    """A rolling deploy: a process still on the old code inserts a run patch naming every column
    but ``wrote``; the column's database default takes it (a 500 on a person's patch, otherwise)."""
    from django.contrib.auth.models import User
    from django.db import connection

    from workflows.models import Artifact, Run, RunPatch

    owner = User.objects.create_user("old-code")
    artifact = Artifact.objects.create(id="sha256:rolling", kind="dag_version", content={"nodes": []}, size_bytes=14)
    run = Run.objects.create(owner=owner, base_artifact=artifact, current_artifact=artifact)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO workflows_runpatch (run_id, seq, operations, description, node_id, status, patch_artifact_id,"
            " before_artifact_id, after_artifact_id, proposed_by_id, reason, proposal_key, created_at, applied_at)"
            " VALUES (%s, 1, '[]', '', '', 'applied', %s, %s, %s, NULL, '', '', now(), now())",
            [run.pk, artifact.pk, artifact.pk, artifact.pk])

    assert RunPatch.objects.get(run=run).wrote == {}


@pytest.mark.django_db(transaction=True)  # the foreign keys are checked at commit
def test_a_process_still_on_the_code_before_triggers_0004_makes_and_deletes_hooks() -> None:
    """A rolling deploy: a process still on the old code inserts a hook naming none of the previous
    secret's columns (their database default takes it), and deletes a hook that has refusals, a
    table it knows nothing of (the database deletes them with it: it failed at commit otherwise)."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from triggers.models import Hook, HookRefusal
    from workflows.models import Artifact, Workflow, WorkflowVersion

    owner = User.objects.create_user("old-code")
    artifact = Artifact.objects.create(id="sha256:rolling-hook", kind="dag_version", content={"nodes": []},
                                       size_bytes=14)
    workflow = Workflow.objects.create(owner=owner, tag="old")
    WorkflowVersion.objects.create(workflow=workflow, seq=1, artifact=artifact)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO triggers_hook (id, owner_id, workflow_id, name, secret_ciphertext, mapping, enabled,"
            " created_at) VALUES ('old-hook', %s, %s, '', 'x', NULL, true, now())", [owner.pk, workflow.pk])
    assert Hook.objects.get(pk="old-hook").previous_secret_ciphertext == ""
    HookRefusal.objects.create(hook_id="old-hook", code="mapping_failed", status=400, message="no")

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM triggers_hook WHERE id = 'old-hook'")

    assert not HookRefusal.objects.exists()


@pytest.fixture
def fresh_database() -> Iterator[tuple[str, dict[str, str]]]:
    """A database of its own on the session's server, empty: its URL and an environment for
    ``manage.py`` pointed at it."""
    import os
    import uuid

    from django.conf import settings

    db = settings.DATABASES["default"]
    name = f"aob_migrate_{uuid.uuid4().hex[:8]}"
    server = f"postgresql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items() if k != "AOB_TEST_DATABASE_NAME"}
    env |= {"DATABASE_URL": f"{server}/{name}", "DJANGO_SETTINGS_MODULE": "aob_project.settings"}
    try:
        yield f"{server}/{name}", env
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.faults_full  # an operator's fault, slow (a database each): `make test-faults` runs it (tests/conftest.py)
def test_two_processes_migrating_one_database_at_once_both_succeed(fresh_database) -> None:
    """Two containers (or hosts) that each run ``migrate`` at start, at the same moment: one of them
    died with ``IntegrityError: duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"`` (both creating the same table), a library traceback that stopped its
    deploy, while the other applied everything. They take turns: the second finds nothing to do."""

    url, env = fresh_database
    both = [manage(env, "migrate", "--noinput") for _ in range(2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in both]

    assert [proc.returncode for proc in both] == [0, 0], "\n=====\n".join(outputs)
    with psycopg.connect(url) as conn:
        twice = conn.execute("SELECT app, name FROM django_migrations GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    assert twice == []


@pytest.mark.faults_full  # an operator's fault, slow (a database each): `make test-faults` runs it (tests/conftest.py)
def test_a_held_index_build_that_was_cancelled_is_built_again_by_the_next_migrate(fresh_database) -> None:
    """0018 builds ``node_run_held`` with CREATE INDEX CONCURRENTLY, which waits for the workers' writes
    in flight. Cancelled meanwhile (an operator's pg_cancel_backend, a statement_timeout, a deadlock, a
    restart) it leaves the index behind, INVALID: every later ``migrate`` then died with "relation
    node_run_held already exists", and the deploy could not pass 0018 without a hand-written DROP INDEX
    (the migration says it "is run again alone")."""
    url = _index_build_cut_off(fresh_database, before="0017", migration="0018", table="workflows_noderun",
                               index="node_run_held")

    _migrate_again(fresh_database)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'node_run_held'::regclass"
                            ).fetchone() == (True,)


@pytest.mark.faults_full  # an operator's fault, slow (a database each): `make test-faults` runs it (tests/conftest.py)
def test_an_in_flight_index_build_cut_off_after_its_first_index_is_built_again_by_the_next_migrate(
        fresh_database) -> None:
    """0037 builds two indexes concurrently in one migration, recorded once both are built. The first
    (the node runs') built and valid, the second cancelled while it waited for a worker's write on the
    patches: the next ``migrate`` died with "relation node_run_waiting already exists", as the drop
    before the builds took only an INVALID leftover. Any index of theirs before the record is one."""
    url = _index_build_cut_off(fresh_database, before="0036", migration="0037", table="workflows_runpatch",
                               index="run_patch_pending")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('node_run_waiting')"
                            ).fetchone() == (True,)

    _migrate_again(fresh_database)
    with psycopg.connect(url) as conn:
        for name in ("node_run_waiting", "run_patch_pending"):
            assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                                [name]).fetchone() == (True,)


def _index_build_cut_off(fresh_database: Any, *, before: str, migration: str, table: str, index: str) -> str:
    """``migrate`` to ``before``, then to ``migration`` while a worker's write holds ``table``; the
    build of ``index`` (CREATE INDEX CONCURRENTLY) cancelled as it waits for that write, and that
    ``migrate`` failed. The database's URL."""
    url, env = fresh_database
    assert manage(env, "migrate", "workflows", before, "--noinput").wait(300) == 0
    writer = psycopg.connect(url)  # a worker's write in flight
    writer.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
    build = manage(env, "migrate", "workflows", migration, "--noinput")
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while not (building := conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND wait_event_type = 'Lock' "
                "AND datname = current_database()", [f"CREATE INDEX CONCURRENTLY%{index}%"]).fetchone()):
            assert time.monotonic() < deadline and build.poll() is None, build.communicate()[0]
            time.sleep(0.05)
        conn.execute("SELECT pg_cancel_backend(%s)", building)
    assert build.wait(60) != 0
    writer.rollback()
    writer.close()
    return url


def _migrate_again(fresh_database: Any) -> None:
    again = manage(fresh_database[1], "migrate", "--noinput")
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output[-3000:]


@pytest.mark.django_db
def test_a_process_still_on_the_code_before_vault_0002_can_store_a_secret() -> None:
    """A rolling deploy: a process still on the old code inserts a secret naming every column but
    ``value_bytes``; the column's database default takes it (a 500 on PUT /secrets/X, otherwise)."""
    from django.contrib.auth.models import User
    from django.db import connection

    from vault.models import Secret

    owner = User.objects.create_user("old-code")
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO vault_secret (owner_id, name, ciphertext, created_at, updated_at)"
                       " VALUES (%s, 'OLD', 'x', now(), now())", [owner.pk])

    assert Secret.objects.get(owner=owner, name="OLD").value_bytes == 0


@pytest.mark.django_db
def test_the_replay_provenance_backfill_stores_what_replays_from_before_inherit_oldest_first() -> None:
    """Replays started before 0034 read their sources' patches through ``replay_of``; the backfill
    stores what each inherits as a replay starting now does, a replay of a replay folding onto its
    source's row (oldest first), so a source deleted afterwards takes nothing of it."""
    import importlib
    from types import SimpleNamespace

    from django.contrib.auth.models import User
    from django.db import connection

    from retention.services import run_remove
    from tests.agents.flows import add_after
    from tests.conftest import stored_run
    from workflows.models import NodeRun, ReplayProvenance, Run
    from workflows.services.patches import run_patch_propose
    from workflows.services.patches.provenance import agent_written, authored_base_id

    backfill = importlib.import_module("workflows.migrations.0035_replay_provenance_backfill").backfill
    owner = User.objects.create_user("old-replays")
    source = stored_run(owner, {"nodes": [{"id": "plan", "type": "agent", "config": {"task": "t"}}], "edges": []})
    NodeRun.objects.create(run=source, node_id="plan", node_type="agent", status="running", iteration=0, attempts=1)
    Run.objects.filter(pk=source.pk).update(status="running")
    run_patch_propose(run=Run.objects.get(pk=source.pk), from_agent=True, node_id="plan", operations=add_after(
        "plan", {"id": "x", "type": "transform", "config": {"expression": "1"}}))
    Run.objects.filter(pk=source.pk).update(status="completed")
    source = Run.objects.get(pk=source.pk)
    replays = []
    for above in (source, None):  # as the code before 0034 started them: no row
        above = above or replays[-1]
        replays.append(Run.objects.create(owner=owner, base_artifact_id=above.current_artifact_id,
                                          current_artifact_id=above.current_artifact_id, replay_of=above,
                                          replay_from_node="plan", status="completed"))
    assert not ReplayProvenance.objects.exists()

    backfill(None, SimpleNamespace(connection=connection))

    assert run_remove(run=source, user=owner) is True
    for replay in replays:
        assert agent_written(replay.pk).nodes == {"x": "plan"}
        assert authored_base_id(replay.pk, base_artifact_id=replay.base_artifact_id) == source.base_artifact_id

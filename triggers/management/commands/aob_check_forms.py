"""List the stored approval forms the current rules refuse: ``manage.py aob_check_forms``.

A form is judged at save, and again when its node runs and at each decision; a stored one is never
judged again at save. After an upgrade whose form rules are stricter (a pattern's weight against
``AOB_FORM_EVAL_BUDGET``), a form saved before may fail every run of its node (``InvalidForm``) and
every decision of a waiting gate. This reads every version a run may still start or is running, and
each pending approval's form, and judges each form as its node's run does (``forms.form_problems``,
the form alone): each workflow's current version, the versions pinned by a ``workflow`` node of one
of those (and of those pinned in turn) and by a schedule, and the definitions of unfinished runs
(their patches included). Each distinct definition is judged once.

It lives in ``triggers``, the lowest app that may read approvals and schedules both (apps depend
downwards only: pyproject.toml's import contracts).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand

from approvals.models import Approval
from triggers.models import Schedule
from workflows.definition.forms import form_problems
from workflows.models import Artifact, Run, Workflow, WorkflowVersion

Pin = tuple[int, str, int]  # (owner id, tag, seq): a version a workflow node or a schedule starts


class Command(BaseCommand):
    help = ("List stored approval forms that no longer validate: in workflows' current versions, versions "
            "pinned by workflow nodes and schedules, unfinished runs and pending approvals.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.found = 0
        # by artifact id: a definition several versions or runs share is judged once, listed for each
        self.judged: dict[str, tuple[list[str], list[tuple[str, int]]]] = {}
        self.pins_read: set[Pin] = set()
        pins: set[Pin] = set()
        workflows = (Workflow.objects.filter(current_version__isnull=False)
                     .select_related("owner", "current_version__artifact").order_by("pk"))
        for workflow in workflows.iterator(chunk_size=20):  # a definition may be megabytes
            version = workflow.current_version
            if version is None:  # its tag's versions deleted since the filter read it
                continue
            self._judge(version.artifact, f"workflow {workflow.owner.username}/{workflow.tag}@{version.seq}",
                        workflow.owner_id, pins)
        for owner_id, tag, seq in Schedule.objects.filter(version__isnull=False).values_list(
                "owner_id", "workflow__tag", "version").distinct().iterator(chunk_size=500):
            if seq is not None:  # filtered so; the type says it may be
                pins.add((owner_id, tag, seq))
        self._pinned(pins)
        unfinished = (Run.objects.exclude(status__in=Run.FINISHED).values_list("current_artifact_id", flat=True)
                      .distinct().order_by("current_artifact_id"))
        for artifact_id in unfinished.iterator(chunk_size=500):
            if artifact_id in self.judged:
                continue
            run = Run.objects.filter(current_artifact_id=artifact_id).exclude(status__in=Run.FINISHED).values_list(
                "pk", "owner_id").first()
            artifact = Artifact.objects.filter(pk=artifact_id).first()
            if run is not None and artifact is not None:
                self._judge(artifact, f"run {run[0]}", run[1], pins)
        self._pinned(pins)
        pending = Approval.objects.filter(status=Approval.Status.PENDING, form__isnull=False).only(
            "pk", "run_id", "node_id", "form").order_by("pk")
        for approval in pending.iterator(chunk_size=100):
            if isinstance(approval.form, dict):
                for problem in form_problems(approval.form)[:1]:
                    self.found += 1
                    self.stdout.write(f"approval {approval.pk} (run {approval.run_id}, node {approval.node_id}): "
                                      f"{problem.rule} at /form{problem.path}: {problem.message}")
        self.stdout.write(f"{self.found} form(s) refused")

    def _pinned(self, pins: set[Pin]) -> None:
        """Judge the pinned versions, one at a time (a definition may be megabytes), and those they pin."""
        while pins - self.pins_read:
            pin = min(pins - self.pins_read)
            self.pins_read.add(pin)
            owner_id, tag, seq = pin
            version = (WorkflowVersion.objects.filter(workflow__owner_id=owner_id, workflow__tag=tag, seq=seq)
                       .select_related("workflow__owner", "artifact").first())
            if version is not None:  # a pin of a version that is gone fails its start as it is
                self._judge(version.artifact, f"workflow {version.workflow.owner.username}/{tag}@{seq}", owner_id,
                            pins)

    def _judge(self, artifact: Artifact, label: str, owner_id: int, pins: set[Pin]) -> None:
        """Print the refused forms of ``artifact`` under ``label``, and add the versions it pins."""
        if artifact.pk not in self.judged:
            refused, pinned = [], []
            for node in _nodes(artifact.content):
                config = node.get("config")
                if not isinstance(config, dict):
                    continue
                if node.get("type") == "workflow" and isinstance(config.get("tag"), str) \
                        and isinstance(config.get("version"), int):
                    pinned.append((config["tag"], config["version"]))
                if node.get("type") == "hitl" and isinstance(config.get("form"), dict):
                    refused += [f"node {node.get('id')}: {problem.rule} at /config/form{problem.path}: {problem.message}"
                                for problem in form_problems(config["form"])[:1]]
            self.judged[artifact.pk] = (refused, pinned)
        refused, pinned = self.judged[artifact.pk]
        pins.update((owner_id, tag, seq) for tag, seq in pinned)
        for line in refused:
            self.found += 1
            self.stdout.write(f"{label} {line}")


def _nodes(definition: Any) -> Iterator[dict[str, Any]]:
    for node in definition.get("nodes", []) if isinstance(definition, dict) else []:
        if isinstance(node, dict):
            yield node

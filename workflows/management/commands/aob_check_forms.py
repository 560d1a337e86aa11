"""List the stored approval forms the current rules refuse: ``manage.py aob_check_forms``.

A form is judged at save, and again when its node runs and at each decision; a stored one is never
judged again at save. After an upgrade whose form rules are stricter (a pattern's weight against
``AOB_FORM_EVAL_BUDGET``), a form saved before may fail every run of its node (``InvalidForm``) and
every decision of a waiting gate. This reads each workflow's current version and each pending
approval's form and judges it as its node's run does (``forms.form_problems``, the form alone).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from approvals.models import Approval
from workflows.definition.forms import form_problems
from workflows.models import Workflow


class Command(BaseCommand):
    help = "List workflows' current versions and pending approvals whose approval forms no longer validate."

    def handle(self, *args: Any, **options: Any) -> None:
        found = 0
        workflows = (Workflow.objects.filter(current_version__isnull=False)
                     .select_related("owner", "current_version__artifact").order_by("pk"))
        for workflow in workflows.iterator(chunk_size=20):  # a definition may be megabytes
            version = workflow.current_version
            if version is None:  # its tag's versions deleted since the filter read it
                continue
            definition = version.artifact.content
            for node in definition.get("nodes", []) if isinstance(definition, dict) else []:
                config = node.get("config") if isinstance(node, dict) and node.get("type") == "hitl" else None
                if isinstance(config, dict) and isinstance(config.get("form"), dict):
                    for problem in form_problems(config["form"])[:1]:
                        found += 1
                        self.stdout.write(f"workflow {workflow.owner.username}/{workflow.tag}@{version.seq} "
                                          f"node {node.get('id')}: {problem.rule} at /config/form{problem.path}: "
                                          f"{problem.message}")
        pending = Approval.objects.filter(status=Approval.Status.PENDING, form__isnull=False).only(
            "pk", "run_id", "node_id", "form").order_by("pk")
        for approval in pending.iterator(chunk_size=100):
            if isinstance(approval.form, dict):
                for problem in form_problems(approval.form)[:1]:
                    found += 1
                    self.stdout.write(f"approval {approval.pk} (run {approval.run_id}, node {approval.node_id}): "
                                      f"{problem.rule} at /form{problem.path}: {problem.message}")
        self.stdout.write(f"{found} form(s) refused")

"""The one executor task. It is published to the queue of the node run's type
(``wf.tasks.<type>``, from the registry), so each type still has a queue of its own in Flower and
a worker can serve a subset of types; the node type itself comes from the row."""

from typing import Any

from celery import Task, shared_task

from workflows.engine.execution import execute
from workflows.registry import EXECUTOR_TASK


@shared_task(name=EXECUTOR_TASK, acks_late=True, ignore_result=True, bind=True)
def execute_node(self: Task, node_run_id: int) -> str | list[Any]:
    # the limits this message enforces, set when it was published: the claim compares them with
    # the node's timeout_ms as it reads it (``execution.send_again``)
    return execute(node_run_id, self.request.timelimit)

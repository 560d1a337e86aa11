"""One executor task per typed queue, plus the default queue's; the node type comes from the row."""

from typing import Any

from celery import shared_task

from workflows.engine.execution import execute


@shared_task(name="workers.execute.http", acks_late=True, ignore_result=True)
def execute_http(node_run_id: int) -> str | dict[str, Any]:
    return execute(node_run_id)


@shared_task(name="workers.execute.agent", acks_late=True, ignore_result=True)
def execute_agent(node_run_id: int) -> str | dict[str, Any]:
    return execute(node_run_id)


@shared_task(name="workers.execute.hitl", acks_late=True, ignore_result=True)
def execute_hitl(node_run_id: int) -> str | dict[str, Any]:
    return execute(node_run_id)


@shared_task(name="workers.execute.transform", acks_late=True, ignore_result=True)
def execute_transform(node_run_id: int) -> str | dict[str, Any]:
    return execute(node_run_id)


@shared_task(name="workers.execute.default", acks_late=True, ignore_result=True)
def execute_default(node_run_id: int) -> str | dict[str, Any]:
    return execute(node_run_id)

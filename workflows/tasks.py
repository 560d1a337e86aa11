"""Celery tasks of the engine: thin, named, taking ids."""

from typing import Any

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from workflows import registry
from workflows.engine import coordinator, events, execution, poison, sweeper
from workflows.engine.completion import Completion
from workflows.services import runs


class _Coordinate(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """The hard time limit killed the process mid-decision (the worker's main process calls
        this): count it like any failed decision, or the sweeper would re-send it forever."""
        target = args[1] if len(args) > 1 else kwargs.get("node_run_id")
        if isinstance(exc, TimeLimitExceeded) and target is not None:
            poison.decision_failed(int(target), exc)


# A decision takes milliseconds; the soft limit raises in it (counted as a failed decision), the
# hard one kills a process that could not stop.
@shared_task(base=_Coordinate, bind=True, name="workflows.coordinate", acks_late=True, ignore_result=True,
             soft_time_limit=settings.AOB_DECISION_SOFT_TIME_LIMIT_S, time_limit=settings.AOB_DECISION_TIME_LIMIT_S)
def coordinate(self: Task, result: Any, node_run_id: int, over_share: bool = False) -> None:
    """``(executor result, node_run_id)``: as an executor's link, Celery prepends the executor's
    return value (a ``Completion`` as a dict, or a status word); sent directly (the sweeper, a
    person's decision, a retry after a failed decision), ``result`` is None. ``over_share``: sent
    to the queue of owners past their share of the coordinator (``engine/shares.py``). A message
    that came back (``redelivered``: the process deciding it died, and Celery put it back) is
    marked as its decision begins: past ``AOB_MAX_DECISION_FAILURES`` deaths the run fails saying so
    (``poison.decision_began``), where before the next process took it and died, without end."""
    if result == execution.CLAIM_HELD:
        return  # its node run waits queued for a slot (engine/admission.py): nothing finished to decide
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if redelivered and poison.decision_began(node_run_id):
        return  # it died deciding this too often: its run failed saying so
    events.hold_until_task_end()  # the decision's events go out after the next executor's publish
    try:
        coordinator.coordinate(node_run_id, Completion.from_message(result), over_share=over_share)
    except (OperationalError, InterfaceError):
        raise  # the database, not the decision: the sweeper asks again once it is back
    except Exception as exc:  # noqa: BLE001 - counted per node run; at the limit the run fails (poison ends)
        poison.decision_failed(node_run_id, exc)
    finally:
        if redelivered:
            poison.decision_ended(node_run_id)


@shared_task(name="workflows.sweep", acks_late=True, ignore_result=True, expires=30)
def sweep() -> dict[str, int]:
    return sweeper.sweep()


@shared_task(name="workflows.check_queues", acks_late=True, ignore_result=True, expires=30)
def check_queues() -> list[str]:
    return sweeper.check_service_queues()


@shared_task(name=registry.OUTPUT_TASK, acks_late=True, ignore_result=True)
def run_output(run_id: str) -> bool:
    """A completed run's ``metadata.output``, computed once and stored (``runs.run_output_store``)."""
    return runs.run_output_store(run_id=run_id)

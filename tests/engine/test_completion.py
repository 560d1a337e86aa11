"""The executor's completion crosses the broker as a list and reads back as the same value."""

from workflows.engine.completion import Completion

DONE = Completion(node_run_id=7, run_id="5f0c3a5e-1b2c-4d5e-8f90-123456789abc", node_id="a", node_type="transform",
                  iteration=2, run_status="running", artifact_id="sha256:ab", patch_seq=1, output_bytes=12)


def test_round_trip_through_the_message() -> None:
    message = DONE.as_message()
    assert isinstance(message, list)
    assert Completion.from_message(message) == DONE


def test_a_dict_from_an_older_worker_still_reads() -> None:
    older = {**{name: getattr(DONE, name) for name in DONE.__dataclass_fields__}, "unknown": 1}
    assert Completion.from_message(older) == DONE


def test_anything_else_is_no_completion() -> None:
    for message in ["duplicate", "waiting", None, [1, 2], {"node_run_id": 7}, 3]:
        assert Completion.from_message(message) is None

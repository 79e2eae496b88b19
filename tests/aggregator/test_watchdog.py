"""The recovery watchdog gives up only on a recovery that stopped moving."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aggregator.watchdog import (
    RecoveryWatch,
    progress_key,
    progress_of,
    progress_record,
    skipped_offsets,
)


def test_a_stalled_recovery_is_given_up_after_the_limit() -> None:
    watch = RecoveryWatch(limit_s=30)
    assert not watch.stalled(True, {0: 5}, now_s=100)
    assert not watch.stalled(True, {0: 5}, now_s=129)
    assert watch.stalled(True, {0: 5}, now_s=130)


def test_progress_restarts_the_clock() -> None:
    watch = RecoveryWatch(limit_s=30)
    watch.stalled(True, {0: 5}, now_s=100)
    assert not watch.stalled(True, {0: 6}, now_s=125)  # read one more event
    assert not watch.stalled(True, {0: 6}, now_s=150)
    assert watch.stalled(True, {0: 6}, now_s=155)


def test_leaving_recovery_resets() -> None:
    watch = RecoveryWatch(limit_s=30)
    watch.stalled(True, {0: 5}, now_s=100)
    assert not watch.stalled(False, {}, now_s=200)
    assert not watch.stalled(True, {0: 5}, now_s=201)  # a new recovery starts its own clock


@given(st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=50))
def test_never_stalled_while_reading(steps: list[int]) -> None:
    """Offsets that move at every look never trip the watchdog, however long it takes."""
    watch = RecoveryWatch(limit_s=1)
    offset = 0
    for i, step in enumerate(steps):
        offset += step + 1
        assert not watch.stalled(True, {0: offset}, now_s=float(i * 10))


def test_a_hole_in_a_partitions_offsets_is_named() -> None:
    assert list(skipped_offsets(175, 176)) == [175]
    assert list(skipped_offsets(11, 14)) == [11, 12, 13]
    assert list(skipped_offsets(0, 2)) == [0, 1]  # a partition's first records


@given(
    st.none() | st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
)
def test_only_a_record_beyond_the_one_due_is_a_hole(due: int | None, offset: int) -> None:
    missing = skipped_offsets(due, offset)
    if due is None or offset <= due:  # nothing known, the record due, or a re-delivery
        assert not missing
    else:
        assert list(missing) == list(range(due, offset))
        assert len(missing) == offset - due


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=2**40))
def test_a_progress_entry_reads_back_as_its_partition_and_offset(
    partition: int, offset: int
) -> None:
    assert progress_of(progress_key(partition), progress_record(offset)) == (partition, offset)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_no_session_id_is_taken_for_a_progress_entry(session_id: str) -> None:
    assert progress_of(session_id.encode(), b"{}") is None


def test_progress_keys_of_partitions_differ() -> None:
    assert len({progress_key(p) for p in range(100)}) == 100

"""When to give up on a stuck table recovery: pure logic, no faust or clock of its own.

faust-streaming's recovery can hang after back-to-back rebalances: it waits for changelog
events the fetcher never delivers ("No event received for active tp ... since recovery
start"), and the worker processes nothing until it is restarted. The worker asks this module
every few seconds whether the recovery has stalled (in recovery, and no changelog offset moved
for `limit_s`); if so it exits with `EXIT_RECOVERY_STALLED`, and its supervisor (systemd,
Kubernetes, `deploy/stack.sh`, the test harness) starts it again. A restart recovers from the
changelog and resumes from the committed offsets: the same path as a crash, which the fault
tests check stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

EXIT_RECOVERY_STALLED: Final = 75  # EX_TEMPFAIL: try again
EXIT_RECORD_SKIPPED: Final = 75  # the same: a restart re-reads from the committed offset


def skipped_offsets(last: int, offset: int) -> range:
    """The offsets of a partition that were never handed to the agent between the last record
    it processed (`last`, -1: none since the partition was taken) and this one (`offset`).

    `beacons` is neither compacted nor written in transactions, so its offsets are contiguous
    and the agent should see every one. faust-streaming 0.15.3 was seen to skip one record in
    a fault test (its consumer's fetch loop marks a record read whether or not it reached the
    stream); the worker then exits with `EXIT_RECORD_SKIPPED` before acking anything after the
    hole, so the committed offset stays at or before it and a restart reads it again."""
    return range(last + 1, offset) if last >= 0 else range(0)


@dataclass(slots=True)
class RecoveryWatch:
    limit_s: float
    _since: float | None = None  # when the current stretch without progress began
    _offsets: dict[Any, int] = field(default_factory=dict)

    def stalled(self, in_recovery: bool, offsets: Mapping[Any, int], now_s: float) -> bool:
        """True once a recovery has read nothing new for `limit_s` seconds."""
        if not in_recovery:
            self._since = None
            return False
        current = dict(offsets)
        if self._since is None or current != self._offsets:
            self._since, self._offsets = now_s, current
            return False
        return now_s - self._since >= self.limit_s

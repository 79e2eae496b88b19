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

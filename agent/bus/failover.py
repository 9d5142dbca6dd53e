"""Which broker node to try next, and when to wait first (pure, no I/O).

The nodes are tried in list order, starting with the first. After a lost connection the
next one in the list comes first (round robin), so a node that just failed is not
retried at once. Attempts go on without a pause until every node of the round has failed
once (the lost node counts as the round's first failure); only then does the capped
back-off wait. With one URL this is the single-broker behaviour: a pause before each try.
"""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base: float = 0.5, cap: float = 4.0, rng: random.Random | None = None):
        self.base, self.cap, self.attempt = base, cap, 0
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not crypto)

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 64)))  # no float overflow
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class NodeOrder:
    """The index of the URL to connect to next, and the pause before that attempt."""

    def __init__(self, count: int, backoff: Backoff | None = None) -> None:
        if count < 1:
            raise ValueError("at least one URL")
        self.count = count
        self.index = 0  # the URL of the current or next attempt
        self.failed_in_round = 0  # consecutive failures since the last success
        self.backoff = backoff or Backoff()

    def connected(self) -> None:
        """The attempt on `index` succeeded."""
        self.failed_in_round = 0
        self.backoff.reset()

    def failed(self) -> float:
        """The connection on `index` failed or was lost: move on; seconds to wait first."""
        self.failed_in_round += 1
        self.index = (self.index + 1) % self.count
        if self.failed_in_round >= self.count:
            self.failed_in_round = 0
            return self.backoff.next()
        return 0.0

    @property
    def round_done(self) -> bool:
        """True right after failed() completed a round (every URL failed once)."""
        return self.failed_in_round == 0 and self.backoff.attempt > 0

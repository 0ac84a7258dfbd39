"""Named random streams: one numpy Generator per purpose of each component.

Every stream derives from ``SeedSequence(seed, spawn_key=(replication,
crc32(name)))`` (design.md §5), so adding a component or changing a timeout
never moves another component's draws: arrivals stay put across sweep cells
(common random numbers). Draws are taken in numpy batches and handed out one by
one, because a per-draw call into numpy costs more than the simulation step it
serves.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

BATCH = 4096


def stable_digest(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


class Streams:
    """Factory of named generators for one (seed, replication)."""

    def __init__(self, seed: int, replication: int = 0) -> None:
        self.seed = int(seed)
        self.replication = int(replication)

    def generator(self, name: str) -> np.random.Generator:
        sequence = np.random.SeedSequence(self.seed, spawn_key=(self.replication, stable_digest(name)))
        return np.random.Generator(np.random.PCG64(sequence))

    def uniform(self, name: str) -> "BatchedStream":
        """U[0, 1) draws."""
        return BatchedStream(self.generator(name).random)

    def exponential(self, name: str) -> "BatchedStream":
        """Unit-mean exponential draws; multiply by the mean."""
        return BatchedStream(self.generator(name).standard_exponential)


class BatchedStream:
    """Draws from one generator, BATCH at a time, handed out one by one with ``next()``."""

    __slots__ = ("_draw", "_buf", "_i")

    def __init__(self, draw: Callable[[int], np.ndarray]) -> None:
        self._draw = draw
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        i = self._i
        if i >= len(self._buf):
            self._buf = self._draw(BATCH).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

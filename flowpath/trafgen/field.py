"""Field engine: per-packet values of a varying header field (TRex STLVmFlowVar, pktgen's
`flag UDPSRC_RND` / `udp_src_min..max`), computed for a whole run at once with numpy.

No Linux counterpart (closest: pktgen.c › mod_cur_headers, which steps one packet at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPS = ("fixed", "inc", "dec", "random")


@dataclass(frozen=True)
class FieldVar:
    """Values min..max (inclusive) taken in turn.

    op     "fixed" (always `init`), "inc" (init, init+step, ... wrapping max -> min), "dec" (init,
           init-step, ... wrapping min -> max) or "random" (uniform over min..max, numpy PCG64 from `seed`)
    init   first value of inc/dec; defaults to min for inc and max for dec (as TRex)
    step   increment of inc/dec, wrapping modulo the range size
    """

    min: int
    max: int
    op: str = "inc"
    step: int = 1
    init: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"field op {self.op!r}: expected one of {', '.join(OPS)}")
        if self.min > self.max:
            raise ValueError(f"field range {self.min}..{self.max} is empty")
        if self.max - self.min >= 1 << 63:
            raise ValueError("field range wider than 2**63 values")
        if self.init is not None and not self.min <= self.init <= self.max:
            raise ValueError(f"field init {self.init} outside {self.min}..{self.max}")

    @classmethod
    def fixed(cls, value: int) -> FieldVar:
        return cls(value, value, "fixed")

    @property
    def size(self) -> int:
        """How many distinct values the range holds."""
        return self.max - self.min + 1

    def offsets(self, n: int, salt: int = 0) -> np.ndarray:
        """int64[n]: value - min of each of the run's n packets. `salt` tells apart the random draws
        of fields that share a seed (the stream builder passes one per field)."""
        span = self.size
        k = np.arange(n, dtype=np.int64)
        if self.op == "fixed" or span == 1:
            first = (self.init if self.init is not None else self.min) - self.min
            return np.full(n, first, np.int64)
        if self.op == "random":
            # Deviation from TRex (per-core LCG): one seeded stream, so a run is reproducible anywhere.
            return np.random.default_rng((self.seed, salt) if salt else self.seed).integers(
                0, span, n, dtype=np.int64
            )
        step = self.step % span
        if self.op == "inc":
            first = (self.init if self.init is not None else self.min) - self.min
            return (first + (k % span) * step) % span
        first = (self.init if self.init is not None else self.max) - self.min
        return (first - (k % span) * step) % span

    def values(self, n: int) -> list[int]:
        """The values themselves as Python ints (any width, e.g. IPv6 addresses)."""
        return [self.min + int(o) for o in self.offsets(n)]

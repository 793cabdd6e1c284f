"""Frame sizes of a stream: fixed, a range, or an IMIX mix in exact ratios.

No Linux counterpart. Sizes are Ethernet frames on the wire including the 4-byte FCS (RFC 2544,
CSIT); a capture holds size - 4 bytes, since the FCS is not captured.
  CSIT IMIX:  28 x 64, 16 x 570, 4 x 1518 (sizes with FCS).
  TRex IMIX:  28 x 60, 16 x 590, 4 x 1514 bytes as TRex builds them (stl/imix.py: pps 28/16/4), which
              are sizes without FCS, i.e. 64 / 594 / 1518 on the wire.
"""

from __future__ import annotations

import numpy as np

from flowpath.trafgen.field import FieldVar

ETH_FCS_LEN = 4  # Linux: include/uapi/linux/if_ether.h
ETH_L1_OVERHEAD = 20  # preamble 7 + SFD 1 + inter-frame gap 12, as TRex's L1 counters
IMIX = {
    "csit": ((64, 28), (570, 16), (1518, 4)),
    "trex": ((60 + ETH_FCS_LEN, 28), (590 + ETH_FCS_LEN, 16), (1514 + ETH_FCS_LEN, 4)),
}


def imix_pattern(mix: tuple[tuple[int, int], ...]) -> np.ndarray:
    """int64[sum of weights]: one cycle of the mix, interleaved by smooth weighted round robin
    (nginx's algorithm), so every cycle holds each size exactly `weight` times and large frames
    are spread out rather than sent back to back."""
    weights = np.array([w for _, w in mix], np.int64)
    if (weights <= 0).any():
        raise ValueError("IMIX weights must be positive")
    total = int(weights.sum())
    current = np.zeros(len(mix), np.int64)
    out = np.empty(total, np.int64)
    for k in range(total):
        current += weights
        j = int(np.argmax(current))
        current[j] -= total
        out[k] = mix[j][0]
    return out


def frame_sizes(spec: int | str | FieldVar | tuple, n: int) -> np.ndarray:
    """int64[n]: the wire size (with FCS) of each of n packets.

    spec  an int (fixed), "imix" / "csit-imix" / "trex-imix" (a name in IMIX, "imix" = CSIT),
          a FieldVar over sizes (inc/dec/random over a range), or a tuple of (size, weight) pairs.
    """
    if isinstance(spec, (int, np.integer)):
        return np.full(n, int(spec), np.int64)
    if isinstance(spec, FieldVar):
        return spec.min + spec.offsets(n)
    return np.resize(imix_pattern(imix_mix(spec)), n)


def imix_mix(spec: str | tuple) -> tuple[tuple[int, int], ...]:
    """The (size, weight) pairs of an IMIX name ("imix" = CSIT, "csit-imix", "trex-imix") or of pairs
    given as they are; one cycle of the mix holds sum(weights) frames."""
    if isinstance(spec, str):
        name = spec.lower().removesuffix("-imix").removesuffix("_imix")
        name = {"imix": "csit"}.get(name, name)
        if name not in IMIX:
            raise ValueError(f"unknown IMIX {spec!r}; known: imix, csit-imix, trex-imix")
        return IMIX[name]
    return tuple(spec)


def mean_size(spec) -> float:
    """Average wire size of a long run of `spec` (for IMIX: the weighted mean, e.g. CSIT 353.83 B)."""
    return float(frame_sizes(spec, 48 * 1000).mean()) if not isinstance(spec, int) else float(spec)

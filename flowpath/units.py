"""Numbers for people: rates with SI prefixes, as the CLI's tables and `ctl top` print them.

No Linux counterpart (iproute2's `ip -h -s link` prints the same kind of figures).
"""

from __future__ import annotations


def si(x: float) -> str:
    """A rate for a table: 4 significant digits with an SI prefix (126.0k, 172.5M, 1.927G), never
    scientific notation; below 1000 as is (0, 950, 12.5)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale * 0.99995:
            v = x / scale
            return f"{v:.{max(0, 4 - len(str(int(abs(v)))))}f}{prefix}"
    return str(int(x)) if x == int(x) else f"{x:.1f}" if abs(x) >= 1 else f"{x:.4f}"

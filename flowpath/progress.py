"""Progress of long jobs (trafgen, replay, rxstats): what library code reports, for the CLI to draw.

No Linux counterpart. Library code never prints (STYLE.md): a job takes a Meter, calls `begin` once
per phase and `advance` every batch or every few thousand packets. The CLI passes one that draws a
progress bar when stderr is a terminal, and this one, which does nothing, otherwise. A phase's units
are whatever its total counts: bytes of the input captures for replay and rxstats (a capture's
packet count is not known before it is read), packets for trafgen.
"""

from __future__ import annotations

PCAP_RECORD_HLEN = 16  # struct pcaprec_hdr: what a classic pcap adds to each frame (for byte totals)


class Meter:
    """Receives a job's progress; this base class ignores it."""

    def begin(self, what: str, total: int | None = None) -> None:
        """A new phase of `total` units (None: unknown); the previous one is complete."""

    def advance(self, units: int, packets: int = 0) -> None:
        """`units` more of the phase's total are done, and `packets` more packets."""


NO_METER = Meter()

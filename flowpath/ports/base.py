"""Port: one interface's receive and transmit queues, behind which a live socket, AF_XDP or a capture
file sits.

No Linux counterpart as such (a net_device's rx/tx queues as a NAPI driver sees them). The gateway's
loop (flowpath.live) only talks to this interface: it waits on `fileno()` with poll(2), fills a
PacketBatch with `rx_burst`, hands fast-path hits back by slot with `tx_burst` and the classic path's
frames with `tx_frame`, then `flush`es once per poll.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from flowpath.packet.batch import PacketBatch


class Port(Protocol):
    """One port. `ifindex` is flowpath's (the network file's), not the kernel's.

    fileno()              a descriptor poll(2) reports readable when rx_burst has frames; -1 if none
    rx_burst(batch, now)  append up to batch.capacity - batch.n received frames (iif = ifindex,
                          ts_ns = now); return how many
    tx_burst(batch, idx)  queue the frames in slots idx (int32, in order) for transmit; return how
                          many were queued (the rest: the ring was full, the caller counts the drops)
    tx_frame(frame)       queue one frame given as bytes; False when the ring is full
    flush()               hand what was queued to the device
    counters()            the port's own counters (e.g. rx_missed: frames the kernel dropped before
                          the ring), by name
    warm(batch)           load whatever compiled code rx_burst/tx_burst/tx_frame run, moving no frame
    close()               release the socket and rings
    """

    name: str
    ifindex: int

    def fileno(self) -> int: ...

    def rx_burst(self, batch: PacketBatch, now_ns: int) -> int: ...

    def tx_burst(self, batch: PacketBatch, idx: np.ndarray) -> int: ...

    def tx_frame(self, frame: bytes) -> bool: ...

    def flush(self) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def warm(self, batch: PacketBatch) -> None: ...

    def close(self) -> None: ...

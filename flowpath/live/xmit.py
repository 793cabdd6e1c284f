"""Hand a poll's transmits to the ports: fast-path hits by slot, the classic path's frames as bytes.

No Linux counterpart as such (dev_queue_xmit to each device's queue, then one doorbell per poll, as
xmit_more batches it). A flow's frames keep their order on every port: the poll's TxList gives hits
in group order and the classic path's frames with their packet index, so both are merged by index
where a poll has both; without classic-path frames (the common, fast case) each port gets its hits
in one burst.
"""

from __future__ import annotations

import numpy as np

from flowpath.packet.batch import PacketBatch


class Xmit:
    """The ports by flowpath ifindex (VLAN frames leave through their parent's port: the classic path
    already names the physical device, and the fast path's header holds the tag). Frames that find
    no port (a dummy device) or a full ring are counted in `dropped`, per ifindex."""

    def __init__(self, ports: dict[int, object]):
        self.ports = ports
        self.dropped: dict[int, int] = {}

    def _drop(self, ifindex: int, n: int) -> None:
        if n:
            self.dropped[ifindex] = self.dropped.get(ifindex, 0) + n

    def hits(self, batch: PacketBatch, hits: list[np.ndarray]) -> None:
        """Fast-path hits only: one burst per port, in packet order."""
        idx = hits[0] if len(hits) == 1 else np.concatenate(hits)
        if len(idx) == 0:
            return
        idx = np.sort(idx)
        oif = batch.oif[idx]
        first = int(oif[0])
        if (oif == first).all():
            self._burst(batch, first, idx)
            return
        for ifx in np.unique(oif):
            self._burst(batch, int(ifx), idx[oif == ifx])

    def _burst(self, batch: PacketBatch, ifindex: int, idx: np.ndarray) -> None:
        port = self.ports.get(ifindex)
        if port is None:
            self._drop(ifindex, len(idx))
            return
        self._drop(ifindex, len(idx) - port.tx_burst(batch, idx.astype(np.int32, copy=False)))

    def frame(self, ifindex: int, frame: bytes) -> None:
        port = self.ports.get(ifindex)
        if port is None or not port.tx_frame(frame):
            self._drop(ifindex, 1)

    def poll(self, tx) -> None:
        """Everything one Worker.poll transmits (a flowpath.datapath.TxList)."""
        if not tx.slow:
            if tx.hits:
                self.hits(tx.batch, tx.hits)
            return
        b = tx.batch
        for i, _, ifx, f, _ in tx.rows():
            if f is None:
                self._burst(b, ifx, np.array([i], np.int32))
            else:
                self.frame(ifx, f)

    def flush(self) -> None:
        for port in self.ports.values():
            port.flush()

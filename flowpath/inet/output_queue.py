"""What the classic path hands back for one received packet: frames to transmit and requests.

No Linux counterpart as one object: Linux transmits through dev_queue_xmit into the device's queue,
and the steps that touch per-CPU state (flow_offload_add, the tunnel tuples of the fast path's ESP
input) run in place. Here the classic path only appends to this queue; the Worker, one layer up,
transmits the frames and carries out the requests after the packet's path (flowpath.datapath).
"""

from __future__ import annotations

from flowpath.packet.skb import SkBuff


class OutputQueue:
    """frames     (ifindex, frame) in transmit order (a VLAN device's frames leave through its parent)
    local_out  (skb, counted): packets the gateway originates (ICMP errors, resets) waiting for
               ip_local_out, sent after the received packet's own path (flowpath.inet.dev);
               counted: a failure to send it is added to `generated`
    offload    (skb, flowtable name): `flow add @ft` accepted skb and it was transmitted
    xfrm_in    (outer skb, SA): the classic path decrypted skb with SA; its later ESP may be
               decrypted at early ingress
    generated  Reasons of the other packets its path disposed of: originated packets that were not sent
               (no route, a hook dropped them...), held fragments its arrival dropped (nf_defrag)
    """

    __slots__ = ("frames", "local_out", "offload", "xfrm_in", "generated")

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.local_out: list[tuple[SkBuff, bool]] = []
        self.offload: list[tuple[SkBuff, str]] = []
        self.xfrm_in: list[tuple[SkBuff, object]] = []
        self.generated: list[int] = []

    def dev_queue_xmit(self, net, link, frame: bytes) -> None:
        """A VLAN device transmits through its parent (vlan_dev_hard_start_xmit)."""
        phys = net.links[link.parent] if link.kind == "vlan" else link
        self.frames.append((phys.ifindex, frame))

"""Helpers for the conntrack/NAT tests: Scapy packets in, parsed SkBuffs through the hooks."""

from scapy.all import TCP, UDP, Ether, NoPayload, Packet, Raw, raw

from flowpath.netfilter.constants import NF_INET_POST_ROUTING, NF_INET_PRE_ROUTING
from flowpath.packet.skb import SkBuff, frame_array, skb_parse

SEC = 1_000_000_000


def skb_of(pkt: Packet, ts_ns: int = 0, iif: int = 1) -> SkBuff:
    """Parse a Scapy L3 (or L2) packet the way the datapath does."""
    if not isinstance(pkt, Ether):
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
    skb = skb_parse(frame_array(raw(pkt)), iif, ts_ns)
    assert isinstance(skb, SkBuff), skb
    return skb


def _dissect(frame: bytes) -> Packet:
    """Ether(frame), with TCP and UDP payloads kept as Raw bytes: Scapy dissects some ports' payloads
    (139 as NetBIOS, 53 as DNS...) and rebuilds them differently, which is not the datapath's doing."""
    p = layer = Ether(frame)
    while not isinstance(layer, NoPayload):
        if type(layer) in (TCP, UDP):  # not TCPerror/UDPerror, quoted in an ICMP error
            if not isinstance(layer.payload, (Raw, NoPayload)):
                body = raw(layer.payload)
                layer.remove_payload()
                layer.add_payload(Raw(body))
            break
        layer = layer.payload
    return p


def l3(skb: SkBuff) -> Packet:
    """The packet as Scapy dissects it now (after any NAT)."""
    return _dissect(skb.tobytes()).payload


def recomputed(skb: SkBuff) -> Packet:
    """The same packet with every outer checksum recomputed by Scapy (inner ICMP-error packets kept)."""
    p = _dissect(skb.tobytes())
    layer = p
    while not isinstance(layer, NoPayload):
        if "error" in type(layer).__name__.lower():
            break
        for f in ("chksum", "cksum"):
            if f in layer.fields and not (isinstance(layer, UDP) and layer.fields[f] == 0):
                setattr(layer, f, None)
        layer = layer.payload
    p.clear_cache()  # dissected packets keep their bytes; force a rebuild
    return _dissect(raw(p)).payload


def assert_csums_ok(skb: SkBuff) -> None:
    """Scapy's recomputation gives the same bytes: every checksum we patched is right."""
    assert raw(recomputed(skb)) == raw(l3(skb))


def inet_csum(data: bytes) -> int:
    """RFC 1071 sum of data, folded (0xFFFF for a correct header including its checksum)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


class Path:
    """Drive packets through PRE_ROUTING (conntrack + DNAT) and POST_ROUTING (SNAT + confirm)."""

    def __init__(self, table, dnat=None, snat=None):
        self.table, self.dnat, self.snat = table, dnat, snat

    def forward(self, pkt, ts_ns=0):
        from flowpath.netfilter.nat import nf_nat_inet_fn

        skb = skb_of(pkt, ts_ns)
        v = self.table.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
        assert v[0] == 1, v
        v = nf_nat_inet_fn(self.table, skb, NF_INET_PRE_ROUTING, self.dnat)
        assert v == 1, v
        v = nf_nat_inet_fn(self.table, skb, NF_INET_POST_ROUTING, self.snat)
        assert v == 1, v
        assert self.table.nf_conntrack_confirm(skb)[0] == 1
        return skb

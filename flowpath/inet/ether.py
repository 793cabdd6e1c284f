"""The Ethernet header the gateway writes on what it transmits.

Linux: net/ethernet/eth.c › eth_header; net/8021q/vlan_dev.c › vlan_dev_hard_header (its TPID,
vlan->vlan_proto: 802.1Q, or 802.1ad for a QinQ service tag).
"""

from __future__ import annotations

import struct

from flowpath.packet import layout as L


def link_header(net, link, dst_mac: bytes, proto: int) -> bytes:
    """dev_hard_header of `link` towards dst_mac: a VLAN device's tag, then its lower device's (a QinQ
    VLAN sits on a VLAN), the outer tag first on the wire."""
    src, tags = link.address, b""
    while link.kind == "vlan":
        tags = struct.pack(">HH", link.vlan_proto, link.vlan_id & 0x0FFF) + tags
        link = net.links[link.parent]
    return dst_mac + src + tags + struct.pack(">H", proto)


def eth_header(dst: bytes, src: bytes, proto: int, vlan_id: int | None = None) -> bytes:
    """dev_hard_header (eth_header), with an 802.1Q tag for a VLAN device (vlan_dev_hard_header)."""
    if vlan_id is None:
        return dst + src + struct.pack(">H", proto)
    return dst + src + struct.pack(">HHH", L.ETH_P_8021Q, vlan_id & 0x0FFF, proto)

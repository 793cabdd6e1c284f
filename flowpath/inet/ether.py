"""The Ethernet header the gateway writes on what it transmits.

Linux: net/ethernet/eth.c › eth_header; net/8021q/vlan_dev.c › vlan_dev_hard_header.
"""

from __future__ import annotations

import struct

from flowpath.packet import layout as L


def link_header(link, dst_mac: bytes, proto: int) -> bytes:
    """dev_hard_header of `link` towards dst_mac."""
    return eth_header(dst_mac, link.address, proto, link.vlan_id if link.kind == "vlan" else None)


def eth_header(dst: bytes, src: bytes, proto: int, vlan_id: int | None = None) -> bytes:
    """dev_hard_header (eth_header), with an 802.1Q tag for a VLAN device (vlan_dev_hard_header)."""
    if vlan_id is None:
        return dst + src + struct.pack(">H", proto)
    return dst + src + struct.pack(">HHH", L.ETH_P_8021Q, vlan_id & 0x0FFF, proto)

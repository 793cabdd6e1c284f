"""What a NAT statement asks for: the contract between rule evaluation and NAT binding.

Linux: include/uapi/linux/netfilter/nf_nat.h (struct nf_nat_range2, NF_NAT_RANGE_* flags).
Addresses are ints (IPv4 32-bit, IPv6 128-bit); ports host-order ints. The evaluator fills a NatRequest
from `snat to` / `dnat to` / `masquerade` / `redirect`; masquerade leaves the address to the datapath,
which knows the output interface (nf_nat_masquerade_ipv4 picks its primary address).
"""

from __future__ import annotations

from dataclasses import dataclass

from flowpath.netfilter.constants import NF_NAT_MANIP_DST, NF_NAT_MANIP_SRC

NF_NAT_RANGE_MAP_IPS = 1 << 0
NF_NAT_RANGE_PROTO_SPECIFIED = 1 << 1
NF_NAT_RANGE_PROTO_RANDOM = 1 << 2
NF_NAT_RANGE_PERSISTENT = 1 << 3
NF_NAT_RANGE_PROTO_RANDOM_FULLY = 1 << 4
NF_NAT_RANGE_PROTO_OFFSET = 1 << 5
NF_NAT_RANGE_NETMAP = 1 << 6


@dataclass(slots=True)
class NfNatRange:
    """struct nf_nat_range2 (without base_proto)."""

    flags: int = 0
    min_addr: int = 0
    max_addr: int = 0
    min_proto: int = 0
    max_proto: int = 0


@dataclass(slots=True)
class NatRequest:
    """One NAT statement's effect: manip type (NF_NAT_MANIP_SRC/DST) and range.

    masquerade=True: source NAT to the output interface's address (filled in by the datapath).
    redirect=True: destination NAT to the input interface's address.
    """

    maniptype: int
    range: NfNatRange
    masquerade: bool = False
    redirect: bool = False


__all__ = ["NF_NAT_MANIP_SRC", "NF_NAT_MANIP_DST", "NfNatRange", "NatRequest"]

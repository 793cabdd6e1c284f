"""nft datatypes: symbolic constants and value parsing, resolved once when the ruleset is built.

Linux: nftables src/datatype.c, src/proto.c, src/ct.c, src/meta.c (symbol tables such as
`icmp_type_tbl`, `tcp_flag_tbl`, `ct_state_tbl`, `dscp_type_tbl`). The kernel only sees the numbers;
nft prints the names, and libnftables JSON carries whichever form `nft -j` chose.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable

from flowpath.config.nft.datatype import DCCP_PKTTYPE, IGMP_TYPE
from flowpath.config.nft.datatype_meta import ARPHRD, CODECS, CT_EVENT
from flowpath.config.nft.exthdr import MH_TYPE
from flowpath.netfilter import constants as C
from flowpath.packet import layout as L

CT_STATE = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}  # NF_CT_STATE_*_BIT
CT_STATUS = {"expected": C.IPS_EXPECTED, "seen-reply": C.IPS_SEEN_REPLY, "assured": C.IPS_ASSURED,
             "confirmed": C.IPS_CONFIRMED, "snat": C.IPS_SRC_NAT, "dnat": C.IPS_DST_NAT,
             "dying": C.IPS_DYING}  # fmt: skip
CT_DIR = {"original": C.IP_CT_DIR_ORIGINAL, "reply": C.IP_CT_DIR_REPLY}
TCP_FLAG = {"fin": L.TCPHDR_FIN, "syn": L.TCPHDR_SYN, "rst": L.TCPHDR_RST, "psh": L.TCPHDR_PSH,
            "ack": L.TCPHDR_ACK, "urg": L.TCPHDR_URG, "ecn": L.TCPHDR_ECE, "cwr": L.TCPHDR_CWR}  # fmt: skip
ICMP_TYPE = {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
             "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11,
             "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15,
             "info-reply": 16, "address-mask-request": 17, "address-mask-reply": 18}  # fmt: skip
ICMP_CODE = {"net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3,
             "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13}  # fmt: skip
ICMPV6_TYPE = {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
               "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130, "mld-listener-report": 131,
               "mld-listener-done": 132, "mld-listener-reduction": 132, "nd-router-solicit": 133,
               "nd-router-advert": 134, "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136,
               "nd-redirect": 137, "router-renumbering": 138, "ind-neighbor-solicit": 141,
               "ind-neighbor-advert": 142, "mld2-listener-report": 143}  # fmt: skip
ICMPV6_CODE = {"no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
               "policy-fail": 5, "reject-route": 6}  # fmt: skip
# include/uapi/linux/netfilter/nf_tables.h › enum nft_reject_inet_code
ICMPX_CODE = {"no-route": 0, "port-unreachable": 1, "host-unreachable": 2, "admin-prohibited": 3}
DSCP = {"cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56, "df": 0,
        "be": 0, "lephb": 1, "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
        "af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38, "va": 44, "ef": 46}  # fmt: skip
ECN = {"not-ect": 0, "ect1": 1, "ect0": 2, "ce": 3}
# include/uapi/linux/rtnetlink.h › RTN_*, as nftables src/fib.c › addrtype_tbl names them
FIB_ADDRTYPE = {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5,
                "blackhole": 6, "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10, "xresolve": 11}  # fmt: skip
PKTTYPE = {"host": 0, "unicast": 0, "broadcast": 1, "multicast": 2, "other": 3}  # PACKET_* (if_packet.h)
ETHER_TYPE = {"ip": L.ETH_P_IP, "ip6": L.ETH_P_IPV6, "arp": L.ETH_P_ARP, "vlan": L.ETH_P_8021Q,
              "8021q": L.ETH_P_8021Q, "8021ad": L.ETH_P_8021AD}  # fmt: skip
NF_PROTO = {"ipv4": C.NFPROTO_IPV4, "ipv6": C.NFPROTO_IPV6}
INET_PROTO = {"hopopt": 0, "icmp": 1, "igmp": 2, "ipencap": 4, "ipip": 4, "tcp": 6, "udp": 17, "ipv6": 41,
              "ipv6-route": 43, "ipv6-frag": 44, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58,
              "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "sctp": 132, "udplite": 136,
              "mh": 135, "ipv6-mh": 135, "dccp": 33, "comp": 108, "pim": 103, "vrrp": 112}  # fmt: skip
# The services nft resolves most often; others go through getservbyname (/etc/services) at build time.
INET_SERVICE = {"ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68,
                "tftp": 69, "http": 80, "www": 80, "pop3": 110, "ntp": 123, "imap": 143, "snmp": 161,
                "bgp": 179, "ldap": 389, "https": 443, "isakmp": 500, "submission": 587, "imaps": 993,
                "pop3s": 995, "openvpn": 1194, "l2tp": 1701, "pptp": 1723, "ipsec-nat-t": 4500,
                "http-alt": 8080}  # fmt: skip
VERDICTS = ("accept", "drop", "continue", "return", "jump", "goto", "queue")

# Datatypes whose relational "implicit" op (JSON "in") is a flag test, not equality (nft BITMASK types).
BITMASK_TYPES = frozenset({"ct_state", "ct_status", "tcp_flag", "ct_label", "ct_event"})


class NftBuildError(ValueError):
    """Something a rule cannot be built from; NftRuntime turns it into a ConfigError naming the rule."""


class NftValueError(NftBuildError):
    """A value that does not parse as its datatype."""


def _int(v: object) -> int:
    if isinstance(v, bool):
        raise NftValueError(f"not an integer: {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    raise NftValueError(f"not an integer: {v!r}")


def _symbolic(table: dict[str, int], what: str) -> Callable[[object], int]:
    def parse(v: object) -> int:
        if isinstance(v, str) and v in table:
            return table[v]
        try:
            return _int(v)
        except NftValueError:
            raise NftValueError(f"unknown {what}: {v!r}") from None

    return parse


def _boolean(v: object) -> int:
    if v in (True, "exists", 1):
        return 1
    if v in (False, "missing", 0):
        return 0
    raise NftValueError(f"not a boolean: {v!r}")


def _ipv4(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise NftValueError(f"not an IPv4 address: {v!r}")
    if isinstance(v, int):
        return v
    try:
        return int(ipaddress.IPv4Address(v))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise NftValueError(f"not an IPv4 address: {v!r}") from None


def _ipv6(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise NftValueError(f"not an IPv6 address: {v!r}")
    if isinstance(v, int):
        return v
    try:
        return int(ipaddress.IPv6Address(v))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise NftValueError(f"not an IPv6 address: {v!r}") from None


def _ether(v: object) -> int:
    if isinstance(v, str) and v.count(":") == 5:
        try:
            return int(v.replace(":", ""), 16)
        except ValueError:
            pass
    raise NftValueError(f"not an Ethernet address: {v!r}")


def _service(v: object) -> int:
    if isinstance(v, str) and not v[:1].isdigit():
        if v in INET_SERVICE:
            return INET_SERVICE[v]
        try:
            return socket.getservbyname(v)
        except OSError:
            raise NftValueError(f"unknown service: {v!r}") from None
    return _int(v)


def _proto(v: object) -> int:
    if isinstance(v, str) and not v[:1].isdigit():
        if v in INET_PROTO:
            return INET_PROTO[v]
        try:
            return socket.getprotobyname(v)
        except OSError:
            raise NftValueError(f"unknown protocol: {v!r}") from None
    return _int(v)


def _codec(name: str, scale: int = 1) -> Callable[[object], int]:
    """A meta or ct type's JSON value (config/nft/datatype_meta.py) as the kernel's register holds it:
    a tc handle, day, hour or group as a number, a date in ns, a ct expiration in ms (`scale`)."""

    def parse(v: object) -> int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v * scale
        try:
            return CODECS[name].num(v) * scale
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):
            raise NftValueError(f"not a {name}: {v!r}") from None

    return parse


def _ct_label(v: object) -> int:
    """A label is a bit number; the register holds the 128-bit label set (nft_ct.c › NFT_CT_LABELS)."""
    n = _int(v)
    if not 0 <= n < 128:
        raise NftValueError(f"not a conntrack label: {v!r}")
    return 1 << n


def _ifname(v: object) -> str:
    if not isinstance(v, str):
        raise NftValueError(f"not an interface name: {v!r}")
    return v


PARSERS: dict[str, Callable[[object], int | str]] = {
    "integer": _int, "mark": _int, "ipv4_addr": _ipv4, "ipv6_addr": _ipv6, "ether_addr": _ether,
    "inet_service": _service, "inet_proto": _proto, "ifname": _ifname,
    "ct_state": _symbolic(CT_STATE, "ct state"), "ct_status": _symbolic(CT_STATUS, "ct status"),
    "ct_dir": _symbolic(CT_DIR, "ct direction"), "tcp_flag": _symbolic(TCP_FLAG, "tcp flag"),
    "icmp_type": _symbolic(ICMP_TYPE, "icmp type"), "icmp_code": _symbolic(ICMP_CODE, "icmp code"),
    "icmpv6_type": _symbolic(ICMPV6_TYPE, "icmpv6 type"),
    "icmpv6_code": _symbolic(ICMPV6_CODE, "icmpv6 code"), "icmpx_code": _symbolic(ICMPX_CODE, "icmpx code"),
    "dscp": _symbolic(DSCP, "dscp"), "ecn": _symbolic(ECN, "ecn"), "ether_type": _symbolic(ETHER_TYPE, "ethertype"),
    "nf_proto": _symbolic(NF_PROTO, "nfproto"), "boolean": _boolean, "pkt_type": _symbolic(PKTTYPE, "pkttype"),
    "fib_addrtype": _symbolic(FIB_ADDRTYPE, "fib address type"), "mh_type": _symbolic(MH_TYPE, "mh type"),
    "dccp_pkttype": _symbolic(DCCP_PKTTYPE, "dccp packet type"), "igmp_type": _symbolic(IGMP_TYPE, "igmp type"),
    "tc_handle": _codec("tc_handle"), "time": _codec("time", 1000), "date": _codec("date", 10**9),
    "day": _codec("day"), "hour": _codec("hour"), "devgroup": _codec("devgroup"), "uid": _int, "gid": _int,
    "arphrd": _symbolic(ARPHRD, "hardware type"), "ct_label": _ct_label, "ct_event": _symbolic(CT_EVENT, "ct event"),
}  # fmt: skip
# Datatype names `nft -j` prints in set declarations, mapped to ours.
TYPE_ALIASES = {"ipv4_addr": "ipv4_addr", "ipv6_addr": "ipv6_addr", "inet_service": "inet_service",
                "inet_proto": "inet_proto", "ifname": "ifname", "mark": "mark", "ether_addr": "ether_addr",
                "ct_state": "ct_state", "ct_status": "ct_status", "icmp_type": "icmp_type",
                "icmpv6_type": "icmpv6_type", "integer": "integer", "dscp": "dscp", "ecn": "ecn",
                "ether_type": "ether_type", "nf_proto": "nf_proto", "tcp_flag": "tcp_flag",
                "icmp_code": "icmp_code", "icmpv6_code": "icmpv6_code", "ct_dir": "ct_dir",
                "iface_index": "integer", "pkt_type": "pkt_type", "fib_addrtype": "fib_addrtype",
                "dccp_pkttype": "dccp_pkttype", "igmp_type": "igmp_type"}  # fmt: skip


def parse_value(dtype: str, v: object) -> int | str:
    """One scalar of `dtype`; a JSON list or {"|": [...]} is an OR of flags (nft BITMASK values)."""
    if isinstance(v, list) or (isinstance(v, dict) and "|" in v):
        items = v if isinstance(v, list) else v["|"]
        acc = 0
        for item in items:
            x = parse_value(dtype, item)
            if not isinstance(x, int):
                raise NftValueError(f"cannot OR {item!r}")
            acc |= x
        return acc
    return PARSERS.get(dtype, _int)(v)


def set_type(name: object) -> str | tuple[str, ...]:
    """A set's declared "type": one datatype name, or a list for a concatenation."""
    if isinstance(name, list):
        return tuple(set_type(n) for n in name)  # type: ignore[misc]
    if isinstance(name, str) and " . " in name:  # a map's concatenated data: "ipv4_addr . inet_service"
        return set_type(name.split(" . "))
    if isinstance(name, str) and name in TYPE_ALIASES:
        return TYPE_ALIASES[name]
    raise NftBuildError(f"unsupported set type {name!r}")

"""Datatypes of nft selectors: parsing symbols, JSON values, listing text and sort order.

Linux: nftables src/datatype.c (symbol tables, integer/string/address types), src/proto.c (payload
fields and their types), src/meta.c and src/ct.c (meta and ct keys). Values are kept in the JSON form
`nft -j` prints: addresses and symbols as strings, numbers as ints, bitmask lists as lists of strings.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flowpath.config.nft.datatype_meta import ARPHRD, CODECS, CT_EVENT
from flowpath.config.nft.exthdr import MH_TYPE, exthdr_type, tcpopt_type
from flowpath.config.nft.netbase import protocols, services
from flowpath.config.nft.output import NUMERIC_PROTO


class DatatypeError(ValueError):
    """A symbol that does not parse as the selector's type (message as nft words it)."""


# --- symbol tables (src/ct.c, src/proto.c, src/datatype.c) -----------------------------------------
CT_STATE = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
CT_STATUS = {
    "expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16, "dnat": 32, "dying": 512,
}  # fmt: skip
CT_DIR = {"original": 0, "reply": 1}
TCP_FLAG = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}
ICMP_TYPE = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5, "echo-request": 8,
    "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
    "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
}  # fmt: skip
ICMPV6_TYPE = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
    "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130, "mld-listener-report": 131,
    "mld-listener-done": 132, "mld-listener-reduction": 132, "nd-router-solicit": 133,
    "nd-router-advert": 134, "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
    "router-renumbering": 138, "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142,
    "mld2-listener-report": 143,
}  # fmt: skip
ICMP_CODE = {
    "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3,
    "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13,
}  # fmt: skip
ICMPV6_CODE = {
    "no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
    "policy-fail": 5, "reject-route": 6,
}  # fmt: skip
ICMPX_CODE = {"port-unreachable": 1, "admin-prohibited": 3, "no-route": 0, "host-unreachable": 2}
DSCP = {
    "cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56,
    "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22, "af31": 26, "af32": 28,
    "af33": 30, "af41": 34, "af42": 36, "af43": 38, "ef": 46,
}  # fmt: skip
# Linux: nftables src/proto.c › ethertype_tbl, in its order (a value lists as its first name)
ETHERTYPE = {"ip": 0x0800, "arp": 0x0806, "ip6": 0x86DD, "8021q": 0x8100, "8021ad": 0x88A8, "vlan": 0x8100}
# Linux: nftables src/proto.c › arpop_tbl (ARPOP_* of include/uapi/linux/if_arp.h)
ARPOP = {"request": 1, "reply": 2, "rrequest": 3, "rreply": 4, "inrequest": 8, "inreply": 9, "nak": 10}
NFPROTO = {"ipv4": 2, "ipv6": 10}
PKTTYPE = {"host": 0, "unicast": 0, "broadcast": 1, "multicast": 2, "other": 3}
IFNAMSIZ = 16  # include/uapi/linux/if.h
# Linux: nftables src/fib.c › addrtype_tbl (RTN_* of include/uapi/linux/rtnetlink.h)
FIB_ADDRTYPE = {
    "unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5, "blackhole": 6,
    "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10, "xresolve": 11,
}  # fmt: skip
# Linux: nftables src/proto.c › ecn_type, dccp_pkttype_type (dccp_pkttype_tbl), igmp_type_type
ECN = {"not-ect": 0, "ect1": 1, "ect0": 2, "ce": 3}
DCCP_PKTTYPE = {
    "request": 0, "response": 1, "data": 2, "ack": 3, "dataack": 4, "closereq": 5, "close": 6, "reset": 7,
    "sync": 8, "syncack": 9,
}  # fmt: skip
IGMP_TYPE = {
    "membership-query": 0x11, "membership-report-v1": 0x12, "membership-report-v2": 0x16,
    "membership-report-v3": 0x22, "leave-group": 0x17,
}  # fmt: skip
LOG_LEVEL = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit")

# symbolic type: (table, bitmask?)
SYMBOLIC: dict[str, tuple[dict[str, int], bool]] = {
    "ct_state": (CT_STATE, True),
    "ct_status": (CT_STATUS, True),
    "ct_dir": (CT_DIR, False),
    "tcp_flag": (TCP_FLAG, True),
    "icmp_type": (ICMP_TYPE, False),
    "icmpv6_type": (ICMPV6_TYPE, False),
    "icmp_code": (ICMP_CODE, False),
    "icmpv6_code": (ICMPV6_CODE, False),
    "dscp": (DSCP, False),
    "ether_type": (ETHERTYPE, False),
    "nf_proto": (NFPROTO, False),
    "pkt_type": (PKTTYPE, False),
    "fib_addrtype": (FIB_ADDRTYPE, False),
    "mh_type": (MH_TYPE, False),
    "arp_op": (ARPOP, False),
    "ecn": (ECN, False),
    "dccp_pkttype": (DCCP_PKTTYPE, False),
    "igmp_type": (IGMP_TYPE, False),
    "arphrd": (ARPHRD, False),
    "ct_event": (CT_EVENT, True),
}
_WIDTH = {"ct_state": 32, "ct_status": 32, "ct_dir": 8, "tcp_flag": 8, "icmp_type": 8, "icmpv6_type": 8, "icmp_code": 8, "icmpv6_code": 8,
          "dscp": 6, "pkt_type": 8, "ether_type": 16, "nf_proto": 8, "inet_service": 16, "inet_proto": 8, "mark": 32,
          "ipv4_addr": 32, "ipv6_addr": 128, "fib_addrtype": 32, "mh_type": 8, "boolean": 1, "arp_op": 16,
          "ether_addr": 48, "ecn": 2, "dccp_pkttype": 4, "igmp_type": 8, "arphrd": 16, "ct_event": 32,
          "iface_index": 32}  # fmt: skip

# --- selectors (src/proto.c, src/meta.c, src/ct.c): key -> datatype --------------------------------
PAYLOAD_FIELDS: dict[str, dict[str, str]] = {
    "ip": {"saddr": "ipv4_addr", "daddr": "ipv4_addr", "protocol": "inet_proto", "ttl": "integer8",
           "length": "integer16", "dscp": "dscp", "id": "integer16", "version": "integer4",
           "hdrlength": "integer4", "checksum": "integer16", "frag-off": "integer16", "ecn": "ecn"},
    "ip6": {"saddr": "ipv6_addr", "daddr": "ipv6_addr", "nexthdr": "inet_proto", "hoplimit": "integer8",
            "length": "integer16", "dscp": "dscp", "flowlabel": "integer20", "version": "integer4",
            "ecn": "ecn"},
    "tcp": {"sport": "inet_service", "dport": "inet_service", "flags": "tcp_flag",
            "sequence": "integer32", "ackseq": "integer32", "window": "integer16", "doff": "integer4",
            "reserved": "integer4", "checksum": "integer16", "urgptr": "integer16"},
    "udp": {"sport": "inet_service", "dport": "inet_service", "length": "integer16", "checksum": "integer16"},
    "udplite": {"sport": "inet_service", "dport": "inet_service", "csumcov": "integer16",
                "checksum": "integer16"},
    "sctp": {"sport": "inet_service", "dport": "inet_service", "vtag": "integer32", "checksum": "integer32"},
    "dccp": {"sport": "inet_service", "dport": "inet_service", "type": "dccp_pkttype"},
    "th": {"sport": "inet_service", "dport": "inet_service"},
    "ah": {"nexthdr": "inet_proto", "hdrlength": "integer8", "reserved": "integer16", "spi": "integer32",
           "sequence": "integer32"},
    "esp": {"spi": "integer32", "sequence": "integer32"},
    "comp": {"nexthdr": "inet_proto", "flags": "hex8", "cpi": "integer16"},
    "igmp": {"type": "igmp_type", "mrt": "integer8", "checksum": "integer16", "group": "integer32"},
    "icmp": {"type": "icmp_type", "code": "icmp_code", "checksum": "integer16", "id": "integer16",
             "sequence": "integer16", "gateway": "integer32", "mtu": "integer16"},
    "icmpv6": {"type": "icmpv6_type", "code": "icmpv6_code", "checksum": "integer16", "id": "integer16",
               "sequence": "integer16", "mtu": "integer32", "max-delay": "integer16"},
    # src/proto.c › proto_eth, proto_vlan (cfi: the old name of dei), proto_arp (its addresses are
    # Ethernet and IPv4 ones: `arp saddr ip`, `arp saddr ether`)
    "ether": {"daddr": "ether_addr", "saddr": "ether_addr", "type": "ether_type"},
    "vlan": {"pcp": "integer3", "dei": "integer1", "cfi": "integer1", "id": "integer12", "type": "ether_type"},
    "arp": {"htype": "integer16", "ptype": "ether_type", "hlen": "integer8", "plen": "integer8",
            "operation": "arp_op", "saddr ether": "ether_addr", "saddr ip": "ipv4_addr",
            "daddr ether": "ether_addr", "daddr ip": "ipv4_addr"},
}  # fmt: skip
# Linux: src/proto.c › proto_vlan: `vlan cfi` is read as `vlan dei`
PAYLOAD_ALIASES = {("vlan", "cfi"): "dei"}
META_KEYS = {
    "l4proto": "inet_proto", "nfproto": "nf_proto", "iifname": "ifname", "oifname": "ifname",
    "iif": "iface_index", "oif": "iface_index", "mark": "mark", "length": "integer32",
    "protocol": "ether_type", "priority": "tc_handle", "pkttype": "pkt_type", "skuid": "uid", "skgid": "gid",
    "ipsec": "boolean", "iiftype": "arphrd", "oiftype": "arphrd", "rtclassid": "realm", "cpu": "integer32",
    "iifgroup": "devgroup", "oifgroup": "devgroup", "cgroup": "integer32", "nftrace": "integer1",
    "random": "integer32", "time": "date", "day": "day", "hour": "hour", "sdif": "iface_index",
    "sdifname": "ifname", "ibrname": "ifname", "obrname": "ifname", "ibrpvid": "integer16",
    "ibrvproto": "ether_type",
}  # fmt: skip
# Linux: nftables src/meta.c › meta_templates: `meta secpath` is the old name of `meta ipsec`
META_ALIASES = {"secpath": "ipsec"}
# src/meta.c › meta_key_is_unqualified: the keys nft lists without `meta`
META_UNQUALIFIED = ("iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup")
# the keys only a bridge family's hooks have (src/meta.c: the kernel's nft_meta_bridge.c)
META_BRIDGE = ("ibrname", "obrname", "ibrpvid", "ibrvproto")
CT_KEYS = {"state": "ct_state", "status": "ct_status", "mark": "mark", "direction": "ct_dir",
           "expiration": "time", "helper": "string", "l3proto": "nf_proto", "protocol": "inet_proto",
           "label": "ct_label", "zone": "integer16", "id": "integer32", "event": "ct_event",
           "bytes": "integer64", "packets": "integer64", "avgpkt": "integer64"}  # fmt: skip
# Linux: nftables src/parser_bison.y › ct_key_dir, ct_key_dir_optional: the keys taking a direction
CT_DIR_KEYS = {"saddr": None, "daddr": None, "l3proto": "nf_proto", "protocol": "inet_proto",
               "proto-src": "inet_service", "proto-dst": "inet_service", "bytes": "integer64",
               "packets": "integer64", "avgpkt": "integer64", "zone": "integer16"}  # fmt: skip
# Linux: nftables src/fib.c › fib_result_tbl and the NFTA_FIB_F_* flags in bit order (fib_tuple)
FIB_FLAGS = ("saddr", "daddr", "mark", "iif", "oif")
FIB_RESULT = {"oif": "iface_index", "oifname": "ifname", "type": "fib_addrtype"}
# Linux: nftables src/xfrm.c › xfrm_templates (NFT_XFRM_KEY_*); addresses take their family's type
IPSEC_KEYS = {"reqid": "integer32", "spi": "integer32", "saddr": None, "daddr": None}
IPSEC_ADDR = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
# Linux: nftables src/rt.c › rt_templates (the keys flowpath models)
RT_KEYS = {"ipsec": "boolean", "classid": "realm", "mtu": "integer16", "nexthop": None}
# Linux: nftables src/socket.c › socket_templates (cgroupv2 not modelled); src/osf.c › osf_expr
# (a name or version string of at most NFT_OSF_MAXGENRELEN, 16, as an interface name is), and its ttl modes
SOCKET_KEYS = {"transparent": "integer1", "mark": "mark", "wildcard": "integer1"}
OSF_KEYS = {"name": "ifname", "version": "ifname"}
OSF_TTL = ("loose", "skip")
# Linux: src/payload.c › the L4 protocol each transport header depends on (nft's `meta l4proto`).
L4_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "udplite": 136, "sctp": 132, "dccp": 33, "ah": 51,
            "esp": 50, "comp": 108, "igmp": 2}  # fmt: skip
# Linux: nftables src/proto.c › the icmp_dep of a field: the ICMP type its meaning depends on
# (payload.c › payload_gen_icmp_dependency); echo's id and sequence depend on a set of two types
ICMP_DEP = {
    ("icmp", "id"): ("echo-reply", "echo-request"), ("icmp", "sequence"): ("echo-reply", "echo-request"),
    ("icmp", "gateway"): "redirect", ("icmp", "mtu"): "destination-unreachable",
    ("icmpv6", "id"): ("echo-request", "echo-reply"), ("icmpv6", "sequence"): ("echo-request", "echo-reply"),
    ("icmpv6", "mtu"): "packet-too-big", ("icmpv6", "max-delay"): "mld-listener-query",
}  # fmt: skip
# Linux: nftables src/sctp_chunk.c › sctp_chunk_protocols: chunk type and its fields (bit offset, width)
_SCTP_COMMON = {"type": (0, 8), "flags": (8, 8), "length": (16, 16)}
_SCTP_INIT = {"init-tag": (32, 32), "a-rwnd": (64, 32), "num-outbound-streams": (96, 16),
              "num-inbound-streams": (112, 16), "initial-tsn": (128, 32)}  # fmt: skip
SCTP_CHUNKS: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {
    "data": (0, {"tsn": (32, 32), "stream": (64, 16), "ssn": (80, 16), "ppid": (96, 32)}),
    "init": (1, _SCTP_INIT), "init-ack": (2, _SCTP_INIT),
    "sack": (3, {"cum-tsn-ack": (32, 32), "a-rwnd": (64, 32), "num-gap-ack-blocks": (96, 16),
                 "num-dup-tsns": (112, 16)}),
    "heartbeat": (4, {}), "heartbeat-ack": (5, {}), "abort": (6, {}),
    "shutdown": (7, {"cum-tsn-ack": (32, 32)}), "shutdown-ack": (8, {}), "error": (9, {}),
    "cookie-echo": (10, {}), "cookie-ack": (11, {}), "ecne": (12, {"lowest-tsn": (32, 32)}),
    "cwr": (13, {"lowest-tsn": (32, 32)}), "shutdown-complete": (14, {}),
    "asconf-ack": (128, {"seqno": (32, 32)}), "forward-tsn": (192, {"new-cum-tsn": (32, 32)}),
    "asconf": (193, {"seqno": (32, 32)}),
}  # fmt: skip


def sctp_chunk_field(name: str, field: str) -> tuple[int, int] | None:
    """(bit offset, bits) of a field of chunk `name`, the common ones (type, flags, length) included."""
    return {**_SCTP_COMMON, **SCTP_CHUNKS[name][1]}.get(field)


def selector_type(left: Any) -> str:
    """Datatype name of a JSON selector expression ({"payload"...}, {"meta"...}, {"ct"...}, {"&": ...})."""
    if isinstance(left, dict):
        if "concat" in left:  # `ip saddr . tcp dport`: nft's concat type, named by its parts
            return " . ".join(selector_type(x) for x in left["concat"])
        if "payload" in left:
            p = left["payload"]
            if "base" in p:  # raw payload: an integer of its width, listed in hex
                return f"hex{p['len']}"
            return PAYLOAD_FIELDS[p["protocol"]][p["field"]]
        if "sctp chunk" in left:
            c = left["sctp chunk"]
            where = sctp_chunk_field(c["name"], c["field"]) if "field" in c else None
            return f"integer{where[1]}" if where else "boolean"
        if "meta" in left:
            return META_KEYS[left["meta"]["key"]]
        if "ct" in left:
            c = left["ct"]
            fam, _, addr = c["key"].rpartition(" ")  # "ip saddr": an address of the family named
            if "dir" in c and addr in CT_DIR_KEYS:
                return CT_DIR_KEYS[addr] or IPSEC_ADDR[fam]
            return CT_KEYS[c["key"]]
        if "&" in left:
            return selector_type(left["&"][0])
        if "tcp option" in left:
            try:
                return tcpopt_type(left["tcp option"])
            except (KeyError, TypeError, ValueError):
                raise DatatypeError(f"unknown tcp option {left['tcp option']!r}") from None
        if "exthdr" in left:
            try:
                return exthdr_type(left["exthdr"])
            except (KeyError, TypeError):
                raise DatatypeError(f"unknown extension header {left['exthdr']!r}") from None
        if "fib" in left:
            f = left["fib"]
            flags = f["flags"] if isinstance(f["flags"], list) else [f["flags"]]
            if not flags or any(x not in FIB_FLAGS for x in flags):
                raise DatatypeError(f"unknown fib flags {flags!r}")
            return FIB_RESULT[f["result"]]
        if "ipsec" in left:
            x = left["ipsec"]
            if x["dir"] not in ("in", "out") or not isinstance(x.get("spnum", 0), int):
                raise DatatypeError("ipsec: dir must be in or out, spnum a number")
            return IPSEC_KEYS[x["key"]] or IPSEC_ADDR[x["family"]]
        if "rt" in left:
            r = left["rt"]
            return RT_KEYS[r["key"]] or IPSEC_ADDR[r["family"]]
        if "numgen" in left or "jhash" in left or "symhash" in left:
            return "integer32"
        if any(op in left for op in ("|", "^", "<<", ">>")):
            return selector_type(next(iter(left.values()))[0])
        if "socket" in left:
            return SOCKET_KEYS[left["socket"]["key"]]
        if "osf" in left:
            return OSF_KEYS[left["osf"]["key"]]
    raise DatatypeError("unsupported expression")


def is_bitmask(dtype: str) -> bool:
    return dtype in SYMBOLIC and SYMBOLIC[dtype][1]


def has_bitmask_base(dtype: str) -> bool:
    """Types nft matches as flags (implicit op "in", `==` printed when explicit): the bitmask types
    and ct_label, whose basetype is bitmask (src/ct.c › ct_label_type)."""
    return is_bitmask(dtype) or dtype == "ct_label"


def type_width(dtype: str) -> int:
    if dtype in CODECS:
        return CODECS[dtype].width
    if dtype.startswith("integer"):
        return int(dtype[7:])
    if dtype.startswith("hex"):  # an integer nft lists in hex: raw payloads, comp flags (bitmask_type)
        return int(dtype[3:])
    return _WIDTH.get(dtype, 0)


# --- parsing a symbol (str from the lexer: word, number, address, string) --------------------------
def _int(sym: str) -> int | None:
    try:
        return int(sym, 16) if sym.lower().startswith("0x") else int(sym, 10)
    except ValueError:
        return None


def parse_value(dtype: str, sym: str, quoted: bool = False) -> Any:
    """JSON value of `sym` for `dtype`, or DatatypeError with nft's wording."""
    if dtype in CODECS:
        try:
            return CODECS[dtype].parse(sym, quoted)
        except ValueError as e:
            raise DatatypeError(str(e)) from None
    if dtype == "ipv4_addr":
        try:
            return str(ipaddress.IPv4Address(sym))
        except ValueError:
            raise DatatypeError(f"Could not resolve hostname: Name or service not known ({sym})") from None
    if dtype == "ipv6_addr":
        try:
            return inet6_ntop(int(ipaddress.IPv6Address(sym)))
        except ValueError:
            raise DatatypeError(f"Could not resolve hostname: Name or service not known ({sym})") from None
    if dtype == "ifname":
        # Linux: nftables src/evaluate.c › expr_evaluate_value (string checks), IFNAMSIZ 16 with its NUL
        if not sym:
            raise DatatypeError("Empty string is not allowed")
        if sym == "*":
            raise DatatypeError("All-wildcard strings are not supported")
        if len(sym.encode()) >= IFNAMSIZ:
            raise DatatypeError(f"String exceeds maximum length of {IFNAMSIZ}")
        return sym
    if dtype == "iface_index":
        return sym
    if dtype == "ether_addr":
        return _ether_addr(sym)
    if dtype == "inet_service":
        n = _int(sym)
        if n is None:
            n = services().get(sym)
            if n is None:
                raise DatatypeError(
                    f"Could not resolve service: Servname not supported for ai_socktype ({sym})"
                )
        return _check_range(n, 16, sym)
    if dtype == "inet_proto":
        n = _int(sym)
        if n is None:
            n = {"icmpv6": 58, "comp": 108}.get(sym, protocols()[0].get(sym))
            if n is None:
                raise DatatypeError(f"Could not resolve protocol name ({sym})")
        _check_range(n, 8, sym)
        return protocols()[1].get(n, n)
    if dtype in SYMBOLIC:
        table, _ = SYMBOLIC[dtype]
        if not quoted and sym in table:
            return num_value(dtype, table[sym])  # an alias lists as the value's first name (8021q)
        n = _int(sym)
        if n is None:
            raise DatatypeError(f"Could not parse {_TYPE_DESC.get(dtype, dtype)}")
        _check_range(n, type_width(dtype), sym)
        for name, v in table.items():
            if v == n:
                return name
        return n
    if dtype == "invalid":  # src/datatype.c › invalid_type: a field with an empty template
        raise DatatypeError("No symbol type information")
    if dtype == "boolean":  # src/datatype.c › boolean_type: exists/missing, or 1/0
        n = _int(sym) if quoted or sym not in ("exists", "missing") else int(sym == "exists")
        if n is None:
            raise DatatypeError("Could not parse boolean type")
        return bool(_check_range(n, 1, sym))
    if dtype == "mark" or dtype.startswith(("integer", "hex")):
        n = _int(sym)
        if n is None:
            raise DatatypeError(f"Could not parse {_TYPE_DESC.get(dtype, 'integer')}")
        return _check_range(n, type_width(dtype), sym)
    raise DatatypeError(f"Could not parse {dtype}")


_TYPE_DESC = {
    "ct_state": "conntrack state", "ct_status": "conntrack status", "ct_dir": "conntrack direction",
    "tcp_flag": "TCP flag", "icmp_type": "ICMP type", "icmpv6_type": "ICMPv6 type",
    "dscp": "Differentiated Services Code Point", "ether_type": "Ethernet protocol",
    "nf_proto": "netfilter protocol", "mark": "packet mark", "fib_addrtype": "fib address type",
    "arp_op": "ARP operation",
    "ipv4_addr": "IPv4 address", "ipv6_addr": "IPv6 address", "mh_type": "Mobility Header Type",
    "boolean": "boolean type", "inet_service": "internet network service", "inet_proto": "Internet protocol",
    "arphrd": "hardware type", "ct_event": "conntrack event bits", "pkt_type": "packet type",
}  # fmt: skip


def type_desc(dtype: str) -> str:
    """How nft names a datatype in its messages (struct datatype › desc)."""
    return _TYPE_DESC.get(dtype, dtype)


def _ether_addr(sym: str) -> str:
    """Linux: nftables src/datatype.c › lladdr_type_parse: hex bytes separated by ':'."""
    parts = sym.split(":")
    try:
        octets = [int(p, 16) for p in parts]
    except ValueError:
        octets = []
    if len(parts) != 6 or any(not 0 <= o <= 255 or not 1 <= len(p) <= 2 for o, p in zip(octets, parts, strict=False)):
        raise DatatypeError(f"Invalid LL address {sym}")
    return ":".join(f"{o:02x}" for o in octets)


def _check_range(n: int, width: int, sym: str) -> int:
    if n < 0 or (width and n >= 1 << width):
        raise DatatypeError(f"Value {n} exceeds valid range 0-{(1 << width) - 1}")  # nft prints it in decimal
    return n


# --- numeric value (sorting, intervals) and listing text -------------------------------------------
def value_num(dtype: str, v: Any) -> int:
    """Integer behind a JSON value, for ordering and interval arithmetic."""
    if dtype in CODECS:
        return CODECS[dtype].num(v)
    if isinstance(v, int):
        return int(v)  # a boolean too
    if isinstance(v, dict) and "|" in v:  # flags OR-ed in a set element: {"|": [a, b]}
        return value_num(dtype, v["|"][0]) | value_num(dtype, v["|"][1])
    if dtype == "ipv4_addr":
        return int(ipaddress.IPv4Address(v))
    if dtype == "ipv6_addr":
        return int(ipaddress.IPv6Address(v))
    if dtype == "ether_addr":
        return int(v.replace(":", ""), 16)
    if dtype in ("ifname", "iface_index"):
        # nft orders strings as host-endian (little) integers: shorter names first
        return int.from_bytes(v.encode()[:16].ljust(16, b"\0"), "little")
    if dtype == "inet_proto":
        return protocols()[0][v]
    if dtype in SYMBOLIC:
        return SYMBOLIC[dtype][0][v]
    raise DatatypeError(f"not a value of {dtype}: {v!r}")


def num_value(dtype: str, n: int) -> Any:
    """JSON value for the integer `n` (inverse of value_num)."""
    if dtype in CODECS:
        return CODECS[dtype].parse(str(n), False)
    if dtype == "ipv4_addr":
        return str(ipaddress.IPv4Address(n))
    if dtype == "ipv6_addr":
        return inet6_ntop(n)
    if dtype == "boolean":
        return bool(n)
    if dtype == "inet_proto":
        return protocols()[1].get(n, n)
    if dtype == "ether_addr":
        return ":".join(f"{b:02x}" for b in n.to_bytes(6, "big"))
    if dtype in SYMBOLIC:
        for name, v in SYMBOLIC[dtype][0].items():
            if v == n:
                return name
    return n


def inet6_ntop(n: int) -> str:
    """IPv6 text as glibc inet_ntop writes it (::ffff:a.b.c.d and ::a.b.c.d keep the dotted quad)."""
    addr = ipaddress.IPv6Address(n)
    words = [(n >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    if words[:5] == [0] * 5 and (words[5] == 0xFFFF or (words[5] == 0 and (words[6] or words[7] > 1))):
        if words[5] == 0 and words[6] == 0:
            return str(addr)  # ::1 style: glibc only keeps the dotted quad when word 6 is set
        v4 = ipaddress.IPv4Address(n & 0xFFFFFFFF)
        return f"::ffff:{v4}" if words[5] == 0xFFFF else f"::{v4}"
    return str(addr)


def value_str(dtype: str, v: Any) -> str:
    """Listing text of one JSON value (no sets, ranges or prefixes)."""
    if isinstance(v, dict) and "|" in v and len(v["|"]) == 2:  # src/expression.c › binop_expr_print
        return " | ".join(value_str(dtype, x) for x in v["|"])
    if isinstance(v, dict):
        raise DatatypeError(f"not a value of {dtype}")
    if isinstance(v, list):  # bitmask list: ct state established,related
        return ",".join(value_str(dtype, x) for x in v)
    if dtype in CODECS:
        return CODECS[dtype].text(v)
    if dtype == "iface_index" and isinstance(v, str) and v.isdigit():
        return v  # an index no device has: nft lists the number (src/datatype.c › ifindex_type_print)
    if dtype in ("ifname", "iface_index"):
        return f'"{v}"'
    if dtype == "mark" and isinstance(v, int):  # JSON may give "0x32": the text parser reads it
        return f"0x{v:08x}"
    if isinstance(v, bool):
        return "exists" if v else "missing"
    if dtype.startswith("hex") and isinstance(v, int):
        return f"0x{v:x}"
    if dtype == "inet_proto" and NUMERIC_PROTO.get():
        return str(value_num(dtype, v))
    if dtype == "ether_type" and isinstance(v, int):
        return f"0x{v:04x}"  # src/proto.c › ethertype_type: BASE_HEXADECIMAL, its 2 bytes
    if dtype == "dscp" and isinstance(v, int):
        return f"0x{v:02x}"
    if dtype in SYMBOLIC and isinstance(v, int):
        return f"0x{v:x}" if is_bitmask(dtype) else str(v)
    return str(v)


def prefix_ok(dtype: str) -> bool:
    """Types whose intervals nft prints as prefixes (DTYPE_F_PREFIX)."""
    return dtype in ("ipv4_addr", "ipv6_addr", "mark")


def set_delim_count(dtype: str) -> int:
    """Elements per line in a named set listing (src/expression.c › calculate_delim); 1 = one a line."""
    if dtype in ("inet_service", "inet_proto", "mark", "tcp_flag", "ct_dir", "nf_proto", "iface_index"):
        return 5
    if dtype.startswith(("integer", "hex")):
        return 5
    if dtype in ("ipv4_addr", "ct_state", "ct_status", "pkt_type"):
        return 2
    return 1

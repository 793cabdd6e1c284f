"""Datatypes of the meta and ct keys beyond numbers and addresses: tc handles, times, days and hours,
device groups and realms, users and groups, hardware types, conntrack labels, events and helpers.

Linux: nftables src/meta.c (tchandle_type, uid_type, gid_type, devgroup_type, day_type, hour_type,
date_type), src/datatype.c (time_type, realm_type, arphrd_type, string_type), src/ct.c (ct_label_type,
ct_event_type), src/rt.c (rt_symbol_table reading /etc/iproute2). Each type is one Codec: `parse` takes
the symbol as written and returns its JSON value (the form `nft -j` prints), `num` the integer behind a
JSON value (order, intervals, the datapath), `text` the listing. A bad symbol raises ValueError with
nft's wording (datatype.py turns it into a DatatypeError).
"""

from __future__ import annotations

import grp
import pwd
import re
import time
from functools import cache
from pathlib import Path
from typing import Any, Callable, NamedTuple

# Linux: include/uapi/linux/pkt_sched.h
TC_H_ROOT, TC_H_UNSPEC = 0xFFFFFFFF, 0
# Linux: nftables src/datatype.c › arphrd_tbl (include/uapi/linux/if_arp.h)
ARPHRD = {
    "ether": 1, "ppp": 512, "ipip": 768, "ipip6": 769, "loopback": 772, "sit": 776, "ipgre": 778,
    "infiniband": 32,
}  # fmt: skip
# Linux: nftables src/ct.c › ct_events_tbl (IPCT_* bits of include/net/netfilter/nf_conntrack_ecache.h)
CT_EVENT = {
    "new": 1, "related": 2, "destroy": 4, "reply": 8, "assured": 16, "protoinfo": 32, "helper": 64,
    "mark": 128, "seqadj": 256, "secmark": 512, "label": 1024,
}  # fmt: skip
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
NF_CT_HELPER_NAME_LEN = 16  # include/uapi/linux/netfilter/nf_conntrack_common.h (with its NUL)
NF_CT_LABELS_MAX_SIZE = 128  # bits; include/net/netfilter/nf_conntrack_labels.h
_IPROUTE2 = Path("/etc/iproute2")


class Codec(NamedTuple):
    parse: Callable[[str, bool], Any]
    num: Callable[[Any], int]
    text: Callable[[Any], str]
    width: int


def _int(sym: str) -> int | None:
    try:
        return int(sym, 16) if sym.lower().startswith("0x") else int(sym, 10)
    except ValueError:
        return None


def _check(n: int, width: int, sym: str) -> int:
    if n < 0 or n >= 1 << width:
        raise ValueError(f"Value {sym} exceeds valid range 0-{(1 << width) - 1}")
    return n


# --- tc handles (meta priority) ---------------------------------------------------------------------
def tchandle_str(n: int) -> str:
    """Linux: nftables src/meta.c › tchandle_type_print."""
    if n == TC_H_ROOT:
        return "root"
    if n == TC_H_UNSPEC:
        return "none"
    return f"{n >> 16:x}:{n & 0xFFFF:x}"


def _tchandle_parse(sym: str, quoted: bool) -> str:
    """Linux: nftables src/meta.c › tchandle_type_parse."""
    if sym in ("root", "none"):
        return sym
    if ":" in sym:
        major, _, minor = sym.partition(":")
        try:
            n = (int(major or "0", 16) << 16) | int(minor or "0", 16)
        except ValueError:
            raise ValueError(f"Could not parse {sym}") from None
        if int(major or "0", 16) > 0xFFFF or int(minor or "0", 16) > 0xFFFF:
            raise ValueError(f"Could not parse {sym}")
        return tchandle_str(n)
    n = _int(sym)
    if n is None:
        raise ValueError("Could not parse integer")
    return tchandle_str(_check(n, 32, sym))


def _tchandle_num(v: Any) -> int:
    if isinstance(v, int):
        return v
    if v in ("root", "none"):
        return TC_H_ROOT if v == "root" else TC_H_UNSPEC
    major, _, minor = v.partition(":")
    return (int(major, 16) << 16) | int(minor, 16)


# --- relative time (ct expiration), in seconds as nft -j prints it ------------------------------------
_TIME_UNITS = {"d": 86400000, "h": 3600000, "m": 60000, "s": 1000, "ms": 1}


def time_parse_ms(sym: str) -> int:
    """Linux: nftables src/datatype.c › time_parse: `1d2h3m4s5ms`, each unit at most once, in order."""
    n = _int(sym)
    if n is not None:
        return n * 1000
    parts = re.findall(r"(\d+)(ms|d|h|m|s)", sym)
    if not parts or "".join(a + b for a, b in parts) != sym:
        raise ValueError("Wrong time format")
    units = [u for _, u in parts]
    order = list(_TIME_UNITS)
    if len(set(units)) != len(units) or units != sorted(units, key=order.index):
        raise ValueError("Wrong time format")
    return sum(int(a) * _TIME_UNITS[u] for a, u in parts)


def _time_parse(sym: str, quoted: bool) -> int:
    ms = time_parse_ms(sym)
    if ms >= 1 << 32:
        raise ValueError(f"Value {sym} exceeds valid range")
    return ms // 1000


def time_str(seconds: int) -> str:
    """Linux: nftables src/datatype.c › time_print (days, hours, minutes, seconds; none when zero)."""
    out, rest = "", seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out + (f"{rest}s" if rest or not out else "")


# --- meta day, hour and time (local time, as nft converts it) ------------------------------------------
def _day_parse(sym: str, quoted: bool) -> str:
    """Linux: nftables src/meta.c › day_type_parse: a day's name (or its first letters), or 0-6."""
    n = _int(sym)
    if n is not None:
        if n > 6:
            raise ValueError("Day number must be in range 0-6")
        return DAYS[n]
    for d in DAYS:
        if len(sym) >= 3 and d.lower().startswith(sym.lower()):
            return d
    raise ValueError(f"Could not parse day ({sym})")


def _hour_parse(sym: str, quoted: bool) -> str:
    """Linux: nftables src/meta.c › hour_type_parse: HH:MM[:SS], below 24:00."""
    m = re.fullmatch(r"(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?", sym)
    if m is None or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3] or 0) > 59:
        raise ValueError(f"Can't parse hour ({sym})" if m is None else "Hour must be in range 00:00 - 23:59")
    return _hour_str(int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3] or 0))


def _hour_str(s: int) -> str:
    """Linux: nftables src/meta.c › hour_type_print (seconds only when there are some)."""
    out = f"{s // 3600:02d}:{s // 60 % 60:02d}"
    return out + (f":{s % 60:02d}" if s % 60 else "")


def _hour_num(v: str) -> int:
    h, m, *s = (int(x) for x in v.split(":"))
    return h * 3600 + m * 60 + (s[0] if s else 0)


_DATE_FMT = "%Y-%m-%d %H:%M:%S"


def _date_parse(sym: str, quoted: bool) -> str:
    """Linux: nftables src/meta.c › date_type_parse: `YYYY-MM-DD HH:MM[:SS]` in local time, or seconds
    since the epoch."""
    n = _int(sym)
    if n is None:
        for fmt in (_DATE_FMT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
            try:
                n = int(time.mktime(time.strptime(sym, fmt)))
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"Cannot parse date ({sym})")
    return time.strftime(_DATE_FMT, time.localtime(n))


def date_seconds(v: str) -> int:
    """Seconds since the epoch of a listed `meta time` (local time)."""
    return int(time.mktime(time.strptime(v, _DATE_FMT)))


# --- iproute2 names: device groups and realms ---------------------------------------------------------
@cache
def rt_symbols(name: str) -> dict[str, int]:
    """Linux: nftables src/rt.c › rt_symbol_table_init: `number name` lines of /etc/iproute2/NAME."""
    out: dict[str, int] = {}
    try:
        lines = (_IPROUTE2 / name).read_text().splitlines()
    except OSError:
        lines = ["0 default"] if name == "group" else ["0 cosmos"]
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and _int(words[0]) is not None:
            out.setdefault(words[1], _int(words[0]))
    return out


def _rt_codec(table: str, width: int = 32) -> Codec:
    def parse(sym: str, quoted: bool) -> Any:
        names = rt_symbols(table)
        if sym in names:
            return sym
        n = _int(sym)
        if n is None:
            raise ValueError(f"Could not parse {'devgroup' if table == 'group' else 'realm'}")
        _check(n, width, sym)
        return next((k for k, v in names.items() if v == n), n)

    def num(v: Any) -> int:
        return v if isinstance(v, int) else rt_symbols(table)[v]

    return Codec(parse, num, lambda v: f'"{v}"' if isinstance(v, str) else str(v), width)


# --- users and groups: numbers, names looked up on this machine as nft does -----------------------------
def _id_codec(lookup: Callable[[str], int], what: str) -> Codec:
    def parse(sym: str, quoted: bool) -> int:
        n = _int(sym)
        if n is not None:
            return _check(n, 32, sym)
        try:
            return lookup(sym)
        except KeyError:
            raise ValueError(f"{what} does not exist") from None

    return Codec(parse, int, str, 32)


# --- strings (ct helper) and conntrack labels -----------------------------------------------------------
def _helper_parse(sym: str, quoted: bool) -> str:
    """Linux: nftables src/evaluate.c › expr_evaluate_value on a string of NF_CT_HELPER_NAME_LEN."""
    if not sym:
        raise ValueError("Empty string is not allowed")
    if len(sym.encode()) >= NF_CT_HELPER_NAME_LEN:
        raise ValueError(f"String exceeds maximum length of {NF_CT_HELPER_NAME_LEN}")
    return sym


def _label_parse(sym: str, quoted: bool) -> int:
    """Linux: nftables src/ct.c › ct_label_type_parse: a bit number below 128 (or a connlabel name)."""
    n = _int(sym)
    if n is None:
        raise ValueError(f"{sym}: could not parse conntrack label")
    if n >= NF_CT_LABELS_MAX_SIZE:
        raise ValueError(f"{sym}: label too high")
    return n


CODECS: dict[str, Codec] = {
    "tc_handle": Codec(_tchandle_parse, _tchandle_num, str, 32),
    "time": Codec(_time_parse, int, time_str, 32),
    "day": Codec(_day_parse, DAYS.index, lambda v: f'"{v}"', 8),
    "hour": Codec(_hour_parse, _hour_num, lambda v: f'"{v}"', 32),
    "date": Codec(_date_parse, date_seconds, lambda v: f'"{v}"', 64),
    "devgroup": _rt_codec("group"),
    "realm": _rt_codec("rt_realms"),
    "uid": _id_codec(lambda s: pwd.getpwnam(s).pw_uid, "User"),
    "gid": _id_codec(lambda s: grp.getgrnam(s).gr_gid, "Group"),
    "ct_label": Codec(_label_parse, int, str, NF_CT_LABELS_MAX_SIZE),
    "string": Codec(
        _helper_parse,
        lambda v: int.from_bytes(v.encode().ljust(16, b"\0"), "little"),
        lambda v: f'"{v}"',
        128,
    ),  # fmt: skip
}


def range_text(dtype: str, v: Any) -> str | None:
    """A range's end as nft lists it (src/expression.c › range_expr_print lists with NUMERIC_ALL):
    a time in plain seconds; None where the usual listing holds."""
    if dtype == "time":
        return f"{v}s"
    return None


__all__ = ["ARPHRD", "CODECS", "CT_EVENT", "Codec", "range_text"]

"""Neighbour (ARP / NDISC) entries configured with `ip neigh`.

Linux: net/core/neighbour.c (neigh_add, neigh_lookup) and include/uapi/linux/neighbour.h (NUD_*).
No resolution happens here: entries are static, as `ip neigh add` leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass

# include/uapi/linux/neighbour.h
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_NAMES = {
    "permanent": NUD_PERMANENT, "reachable": NUD_REACHABLE, "stale": NUD_STALE, "delay": NUD_DELAY,
    "probe": NUD_PROBE, "noarp": NUD_NOARP,
}  # fmt: skip
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY


@dataclass(slots=True)
class Neighbour:
    """struct neighbour: `primary_key` the protocol address, `ha` the 6-byte hardware address."""

    family: int
    primary_key: int
    ifindex: int
    ha: bytes
    nud_state: int = NUD_PERMANENT


class NeighTable:
    """arp_tbl and nd_tbl in one dict keyed by (family, ifindex, address)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int, int], Neighbour] = {}

    def neigh_lookup(self, family: int, addr: int, ifindex: int) -> Neighbour | None:
        return self._entries.get((family, ifindex, addr))

    def add(self, n: Neighbour, replace: bool = False) -> bool:
        """Add an entry; False if one exists and `replace` is off (EEXIST, as `ip neigh add`)."""
        key = (n.family, n.ifindex, n.primary_key)
        if key in self._entries and not replace:
            return False
        self._entries[key] = n
        return True

    def remove(self, family: int, addr: int, ifindex: int) -> bool:
        return self._entries.pop((family, ifindex, addr), None) is not None

    def flush_dev(self, ifindex: int, family: int | None = None) -> None:
        """Linux: neighbour.c › neigh_ifdown, on NETDEV_DOWN: the link's entries go, permanent ones too
        (`family`: only arp_tbl or nd_tbl)."""
        for key in [k for k in self._entries if k[1] == ifindex and family in (None, k[0])]:
            del self._entries[key]

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda n: (n.family, n.ifindex, n.primary_key)))

"""Reading and preparing the kernel interface behind a live port: link, addresses, sysctls, GRO.

Linux: net/core/dev_ioctl.c › dev_ifsioc (SIOCGIFINDEX, SIOCGIFHWADDR, SIOCGIFMTU, SIOC[GS]IFFLAGS),
net/ipv4/devinet.c › inet_dump_ifaddr (RTM_GETADDR), net/ipv6/addrconf.c › if6_seq_show
(/proc/net/if_inet6), net/ethtool/ioctl.c › ethtool_set_one_feature (ETHTOOL_SGRO).
Everything goes through a socket or a file of the calling thread's network namespace (no sysfs: a
/sys mounted for another namespace would show that namespace's links). The gateway owns the port's
traffic, so `prepare_port` keeps the kernel's own stack quiet on it: IPv6 off (no link-local address,
so no Router/Neighbour Solicitations and no DAD), arp_ignore 8 (never answer ARP), GRO off (frames
arrive as they were on the wire), link up. `restore_port` undoes exactly what it changed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field

from flowpath.errors import PortError

# include/uapi/linux/sockios.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFADDR = 0x8915
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
SIOCGIFINDEX = 0x8933
SIOCETHTOOL = 0x8946
# include/uapi/linux/if.h
IFNAMSIZ = 16
IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200
IFF_LOWER_UP = 0x10000  # SIOCGIFFLAGS returns only the low 16 bits; dev_get_flags has more
# include/uapi/linux/ethtool.h
ETHTOOL_GGRO = 0x2B
ETHTOOL_SGRO = 0x2C
# include/uapi/linux/netlink.h, rtnetlink.h, if_addr.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RTM_NEWADDR = 20
RTM_GETADDR = 22
IFA_ADDRESS = 1
IFA_LOCAL = 2
# include/net/ipv6.h › IPV6_ADDR_* scope bits as /proc/net/if_inet6 prints them
IPV6_ADDR_SCOPES = {0x00: "global", 0x10: "host", 0x20: "link", 0x40: "site"}
# Documentation/networking/ip-sysctl.rst › arp_ignore 8: do not reply for any local address
ARP_IGNORE_ALL = 8

_IFREQ_SIZE = 40  # struct ifreq: ifr_name[16] + the largest union member (struct ifmap, 24 bytes)
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # ifa_family, ifa_prefixlen, ifa_flags, ifa_scope, ifa_index
_RTATTR = struct.Struct("=HH")  # rta_len, rta_type


@dataclass(frozen=True, slots=True)
class KernelLink:
    """A kernel interface as `ip link show` prints it.

    ifindex  the kernel's ifindex (in the caller's network namespace)
    mac      the link-layer address (6 bytes on Ethernet)
    mtu      the L3 MTU in bytes (the frame carries mtu + 14, + 4 with one VLAN tag)
    flags    SIOCGIFFLAGS (IFF_*, low 16 bits)
    """

    name: str
    ifindex: int
    mac: bytes
    mtu: int
    flags: int

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def mac_str(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)


@dataclass(frozen=True, slots=True)
class Inet6Addr:
    """One line of /proc/net/if_inet6: address, prefix length, scope ("link" for fe80::/10)."""

    address: ipaddress.IPv6Address
    prefixlen: int
    scope: str


@dataclass(slots=True)
class PortPrep:
    """What prepare_port changed, so that restore_port puts back exactly that (None: left alone)."""

    name: str
    brought_up: bool = False
    disable_ipv6: str | None = None  # the old value
    arp_ignore: str | None = None
    gro_was_on: bool = False
    notes: list[str] = field(default_factory=list)  # settings that could not be made (e.g. no GRO control)


def _check_name(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw or raw in (b".", b".."):
        raise PortError(name, "not a valid interface name (1-15 bytes, no '/')")
    return raw


def _ifreq(name: str, tail: bytes = b"") -> bytearray:
    return bytearray(_check_name(name).ljust(IFNAMSIZ, b"\0") + tail.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0"))


def _ioctl(sock: socket.socket, name: str, req: int, tail: bytes = b"") -> bytearray:
    buf = _ifreq(name, tail)
    fcntl.ioctl(sock.fileno(), req, buf)
    return buf


def _ctl_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)


def kernel_link(name: str) -> KernelLink | None:
    """The interface `name` of the caller's network namespace, or None when there is none."""
    with _ctl_socket() as s:
        try:
            ifindex = struct.unpack_from("i", _ioctl(s, name, SIOCGIFINDEX), IFNAMSIZ)[0]
            hw = _ioctl(s, name, SIOCGIFHWADDR)  # struct sockaddr: sa_family, sa_data[14]
            mtu = struct.unpack_from("i", _ioctl(s, name, SIOCGIFMTU), IFNAMSIZ)[0]
            flags = struct.unpack_from("H", _ioctl(s, name, SIOCGIFFLAGS), IFNAMSIZ)[0]
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise PortError(name, f"cannot read the link: {e.strerror}") from None
    return KernelLink(name, ifindex, bytes(hw[IFNAMSIZ + 2 : IFNAMSIZ + 8]), mtu, flags)


def _require_link(name: str) -> KernelLink:
    link = kernel_link(name)
    if link is None:
        raise PortError(name, "no such interface in this network namespace")
    return link


def ipv4_addrs(name: str) -> list[ipaddress.IPv4Interface]:
    """Every IPv4 address on the interface with its prefix (`ip -4 addr show dev NAME`), in the
    kernel's order: an RTM_GETADDR dump (SIOCGIFADDR would give the primary address only)."""
    ifindex = _require_link(name).ifindex
    out = []
    for family, prefixlen, index, attrs in _rtm_getaddr(socket.AF_INET):
        local = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))  # IFA_ADDRESS is the peer on a p2p link
        if index == ifindex and family == socket.AF_INET and local is not None and len(local) == 4:
            out.append(ipaddress.IPv4Interface((bytes(local), prefixlen)))
    return out


def has_ipv4(name: str) -> bool:
    """True when the interface has an IPv4 address; SIOCGIFADDR says EADDRNOTAVAIL when it has none."""
    with _ctl_socket() as s:
        try:
            _ioctl(s, name, SIOCGIFADDR)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return False
            if e.errno == errno.ENODEV:
                raise PortError(name, "no such interface in this network namespace") from None
            raise PortError(name, f"cannot read its IPv4 address: {e.strerror}") from None
    return True


def _rtm_getaddr(family: int):
    """Yield (family, prefixlen, ifindex, {IFA_*: bytes}) for each address of the dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        req = _IFADDRMSG.pack(family, 0, 0, 0, 0)
        nl.send(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(req), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req
        )
        while True:
            data = nl.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _, _, _ = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size or off + length > len(data):
                    raise PortError("rtnetlink", "malformed RTM_GETADDR reply")
                body = data[off + _NLMSGHDR.size : off + length]
                off += (length + 3) & ~3
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("i", body)[0]
                    raise PortError("rtnetlink", f"RTM_GETADDR: {os.strerror(err)}")
                if mtype != RTM_NEWADDR or len(body) < _IFADDRMSG.size:
                    continue
                fam, plen, _, _, index = _IFADDRMSG.unpack_from(body)
                yield fam, plen, index, _rtattrs(body, _IFADDRMSG.size)


def _rtattrs(body: bytes, off: int) -> dict[int, bytes]:
    attrs = {}
    while off + _RTATTR.size <= len(body):
        rlen, rtype = _RTATTR.unpack_from(body, off)
        if rlen < _RTATTR.size or off + rlen > len(body):
            break
        attrs[rtype] = body[off + _RTATTR.size : off + rlen]
        off += (rlen + 3) & ~3
    return attrs


def ipv6_addrs(name: str) -> list[Inet6Addr]:
    """The interface's IPv6 addresses from /proc/net/if_inet6 (empty when IPv6 is off or absent)."""
    _check_name(name)
    try:
        lines = open("/proc/net/if_inet6").read().splitlines()
    except FileNotFoundError:  # a kernel without IPv6
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) == 6 and f[5] == name:
            scope = IPV6_ADDR_SCOPES.get(int(f[3], 16) & 0xF0, "global")
            out.append(Inet6Addr(ipaddress.IPv6Address(bytes.fromhex(f[0])), int(f[2], 16), scope))
    return out


def port_addresses(name: str) -> list[str]:
    """The addresses a port must not carry, as `ip addr` prints them: every IPv4 address and every
    IPv6 address but link-local ones (prepare_port's disable_ipv6 removes those)."""
    return [str(a) for a in ipv4_addrs(name)] + [f"{a.address}/{a.prefixlen}" for a in ipv6_addrs(name)
                                                  if a.scope != "link"]  # fmt: skip


def _sysctl_path(name: str, family: str, key: str) -> str:
    _check_name(name)
    return f"/proc/sys/net/{family}/conf/{name}/{key}"


def _sysctl_swap(name: str, family: str, key: str, value: str) -> str | None:
    """Write `value`; return the old value when it changed, None when it already was `value`."""
    path = _sysctl_path(name, family, key)
    try:
        old = open(path).read().strip()
        if old == value:
            return None
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise PortError(name, f"cannot set {family} {key}={value}: {e.strerror}") from None
    return old


def _sysctl_write(name: str, family: str, key: str, value: str) -> None:
    try:
        with open(_sysctl_path(name, family, key), "w") as f:
            f.write(value)
    except OSError as e:
        raise PortError(name, f"cannot restore {family} {key}={value}: {e.strerror}") from None


def _set_flags(s: socket.socket, name: str, set_bits: int, clear_bits: int) -> int:
    """Read-modify-write SIOCSIFFLAGS; returns the old flags."""
    old = struct.unpack_from("H", _ioctl(s, name, SIOCGIFFLAGS), IFNAMSIZ)[0]
    new = (old | set_bits) & ~clear_bits & 0xFFFF
    if new != old:
        _ioctl(s, name, SIOCSIFFLAGS, struct.pack("H", new))
    return old


def _ethtool_value(s: socket.socket, name: str, cmd: int, data: int = 0) -> int:
    """struct ethtool_value {cmd, data} through SIOCETHTOOL; ifr_data points at it."""
    val = (ctypes.c_uint32 * 2)(cmd, data)
    _ioctl(s, name, SIOCETHTOOL, struct.pack("P", ctypes.addressof(val)))
    return int(val[1])


def gro_enabled(name: str) -> bool | None:
    """GRO on/off as `ethtool -k` shows it; None when the driver has no GRO control."""
    with _ctl_socket() as s:
        try:
            return bool(_ethtool_value(s, name, ETHTOOL_GGRO))
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                return None
            raise PortError(name, f"ethtool GGRO: {e.strerror}") from None


def prepare_port(name: str) -> PortPrep:
    """Make `name` a port the gateway owns: IPv6 off, arp_ignore 8, GRO off where possible, link up.

    IPv6 goes off before the link comes up, so no link-local address is ever configured and the
    kernel sends no DAD, RS or MLD there. Returns what changed, for restore_port.
    """
    _require_link(name)
    prep = PortPrep(name)
    try:
        if os.path.exists(_sysctl_path(name, "ipv6", "disable_ipv6")):
            prep.disable_ipv6 = _sysctl_swap(name, "ipv6", "disable_ipv6", "1")
        else:
            prep.notes.append("no IPv6 in this kernel")
        prep.arp_ignore = _sysctl_swap(name, "ipv4", "arp_ignore", str(ARP_IGNORE_ALL))
        with _ctl_socket() as s:
            try:
                if _ethtool_value(s, name, ETHTOOL_GGRO):
                    _ethtool_value(s, name, ETHTOOL_SGRO, 0)
                    prep.gro_was_on = True
            except OSError as e:
                if e.errno != errno.EOPNOTSUPP:
                    raise PortError(name, f"cannot turn GRO off: {e.strerror}") from None
                prep.notes.append("GRO cannot be controlled (EOPNOTSUPP)")
            try:
                prep.brought_up = not _set_flags(s, name, IFF_UP, 0) & IFF_UP
            except OSError as e:
                raise PortError(name, f"cannot bring the link up: {e.strerror}") from None
    except BaseException:
        restore_port(prep)
        raise
    return prep


def restore_port(prep: PortPrep) -> None:
    """Undo what prepare_port changed, in reverse order. A vanished interface is not an error (it
    took its settings with it); the first other failure is raised after trying the rest."""
    name, first = prep.name, None
    if kernel_link(name) is None:
        return
    with _ctl_socket() as s:
        try:
            if prep.brought_up:
                _set_flags(s, name, 0, IFF_UP)
            if prep.gro_was_on:
                _ethtool_value(s, name, ETHTOOL_SGRO, 1)
        except OSError as e:
            first = PortError(name, f"cannot restore the link flags or GRO: {e.strerror}")
    for family, key, old in (
        ("ipv4", "arp_ignore", prep.arp_ignore),
        ("ipv6", "disable_ipv6", prep.disable_ipv6),
    ):
        if old is not None:
            try:
                _sysctl_write(name, family, key, old)
            except PortError as e:
                first = first or e
    if first is not None:
        raise first

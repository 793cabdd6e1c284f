"""Test helpers: private network namespaces with a veth pair, and entering them from this process.

No Linux counterpart (iproute2's `ip netns`, setns(2)). Sockets opened inside `inside(ns)` stay in
that namespace after the block; the rest of the process is back where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def have_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def inside(ns: str):
    """Run the block in network namespace `ns` (this thread only)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


class VethPair:
    """Namespaces `a` and `b` (prefix fpt-<pid>-) joined by veth `pa` (in a) and `pb` (in b)."""

    def __init__(self, tag: str, ipv6: bool = False):
        pid = os.getpid()
        self.a, self.b = f"fpt-{pid}-{tag}a", f"fpt-{pid}-{tag}b"
        self.pa, self.pb, self.ipv6 = "fpa0", "fpb0", ipv6
        sh("ip", "netns", "add", self.a)
        try:
            sh("ip", "netns", "add", self.b)
            for ns in (self.a, self.b):
                if not ipv6:  # quiet links: no DAD, RS or MLD frames among the test's own
                    for key in ("all", "default"):
                        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1",
                           check=False)  # fmt: skip
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.a, "link", "add", "name", self.pa, "type", "veth", "peer", "name", self.pb,
               "netns", self.b)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def mac(self, side: str) -> bytes:
        ns, dev = (self.a, self.pa) if side == "a" else (self.b, self.pb)
        text = sh("ip", "-n", ns, "-br", "link", "show", "dev", dev).stdout.split()
        return bytes.fromhex(text[2].replace(":", ""))

    def up(self) -> None:
        sh("ip", "-n", self.a, "link", "set", self.pa, "up")
        sh("ip", "-n", self.b, "link", "set", self.pb, "up")

    def close(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)

"""Network namespaces joined by veth pairs, commands and processes run inside them, one teardown.

Linux: ip-netns(8), veth(4) (the `ip netns` and `ip link add ... type veth` a tester types by hand).
No Linux counterpart as a module: this is the bench the live tests, benchmarks/live_forward.py and
`flowpath testbed` stand on. Every namespace gets a unique prefixed name (`fpt-<pid>-<n>-<role>`), so
parallel runs never meet, and `Testbed.close()` always runs the same teardown: processes started
here are ended by their id, then whatever else still lives in our namespaces, then the namespaces
go (their veths with them).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_SEQ = itertools.count()


class TestbedError(RuntimeError):
    """A command of the bench failed; the message carries the command and its stderr."""

    __test__ = False  # not a pytest class, despite the name


def require_netns() -> str | None:
    """Why namespaces cannot be used here (not root, no iproute2), or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def _run(cmd: Sequence[str], check: bool, timeout: float, input: str | None = None):
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"{' '.join(cmd)}: no answer within {timeout} s") from e
    if check and p.returncode != 0:
        raise TestbedError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


class Netns:
    """One network namespace and the processes started in it.

    `ip netns exec` enters the namespace and execs the command (no fork), so a Popen's pid is the
    program itself: signals reach it directly.
    """

    def __init__(self, name: str):
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, cmd)]

    def run(self, *cmd, check: bool = True, timeout: float = 30, input: str | None = None):
        """Run a command inside; CompletedProcess (text). check: raise TestbedError on exit != 0."""
        return _run(self.argv(*cmd), check, timeout, input)

    def popen(self, *cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None, **kw):
        """Start a command inside, in its own session (its children share its process group); the
        teardown ends it."""
        p = subprocess.Popen(
            self.argv(*cmd), stdout=stdout, stderr=stderr, env=env, start_new_session=True, **kw
        )
        self.procs.append(p)
        return p

    def ip(self, *args, check: bool = True):
        return _run(["ip", "-n", self.name, *map(str, args)], check, 30)

    def sysctl(self, *assignments: str) -> None:
        """sysctl -w NAME=VALUE..., inside."""
        self.run("sysctl", "-qw", *assignments)

    def link(self, dev: str) -> dict:
        """`ip -j -s link show DEV`: the kernel's view of a link (address, mtu, stats64...)."""
        return json.loads(self.ip("-j", "-s", "link", "show", "dev", dev).stdout)[0]

    def mac(self, dev: str) -> str:
        return self.link(dev)["address"]

    def pids(self) -> list[int]:
        p = _run(["ip", "netns", "pids", self.name], False, 10)
        return [int(x) for x in p.stdout.split()]

    def stop_procs(self, grace_s: float = 1.0) -> None:
        """SIGTERM each process started here, SIGKILL what is left after grace_s, then anything still
        living in the namespace (started by those processes)."""
        live = [p for p in self.procs if p.poll() is None]
        for p in live:
            _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
                p.wait(5)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group of a process started with start_new_session (its id is the pid)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


class Testbed:
    """Namespaces with unique names and the veth pairs between them; a context manager whose exit
    (also on error) is `close()`.

    >>> with Testbed() as tb:
    ...     a, b = tb.add_netns("a"), tb.add_netns("b")
    ...     tb.veth(a, "eth0", b, "eth0")
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, prefix: str = "fpt", unique: bool = True):
        # unique=False: names are prefix-role exactly (`flowpath testbed`'s, found again by `down`)
        self.prefix = f"{prefix}-{os.getpid()}-{next(_SEQ)}-" if unique else f"{prefix}-"
        self.namespaces: list[Netns] = []

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_netns(self, role: str) -> Netns:
        """A new namespace named prefix + role, its loopback up."""
        ns = Netns(self.prefix + role)
        _run(["ip", "netns", "add", ns.name], True, 30)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_dev: str, b: Netns, b_dev: str, a_mac=None, b_mac=None, mtu=None) -> None:
        """A veth pair a_dev (in a) <-> b_dev (in b), both up. MACs and MTU as given, else the kernel's."""
        a.ip("link", "add", "name", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
        for ns, dev, mac in ((a, a_dev, a_mac), (b, b_dev, b_mac)):
            if mac:
                ns.ip("link", "set", "dev", dev, "address", mac)
            if mtu:
                ns.ip("link", "set", "dev", dev, "mtu", mtu)
            ns.ip("link", "set", "dev", dev, "up")

    def close(self) -> None:
        """Processes first (a process keeps its namespace alive), then the namespaces."""
        errors = []
        for ns in reversed(self.namespaces):
            try:
                ns.stop_procs()
            except Exception as e:  # noqa: BLE001 - the namespaces must go all the same
                errors.append(f"{ns.name}: {e}")
        for ns in reversed(self.namespaces):
            p = _run(["ip", "netns", "del", ns.name], False, 30)
            if p.returncode != 0 and Path("/run/netns", ns.name).exists():
                errors.append(f"ip netns del {ns.name}: {p.stderr.strip()}")
        self.namespaces.clear()
        if errors:
            raise TestbedError("teardown: " + "; ".join(errors))

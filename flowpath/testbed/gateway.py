"""A LAN host and a WAN host with a gateway between them, the gateway either flowpath or Linux itself.

No Linux counterpart: the bench a tester builds by hand with `ip netns` to put a router under test.

    h1 (LAN host)                 gw (gateway)                  h2 (WAN host)
    eth0 192.168.1.10/24 ----- lan0 192.168.1.1/24
         2001:db8:1::10/64          2001:db8:1::1/64
                                    wan0 203.0.113.1/24 ------- eth0 203.0.113.254/24
                                         2001:db8:ff::1/64           2001:db8:ff::fe/64

h1 routes everything through the gateway; h2 has no route back to the LAN, so anything h1 reaches
on h2 went through the gateway's masquerade. Two kinds of gateway behind one interface:

- `flowpath`: `flowpath run` in gw on AF_PACKET ports. The kernel's lan0/wan0 carry no address;
  the network file names them (`link add lan0`), gives flowpath the addresses and default routes and
  no neighbour at all, so ARP and ND are resolved live. Ready when its control socket answers.
- `linux`: the kernel forwards, with the same addresses and routes (`ip -batch` of the same lines),
  the forwarding sysctls on and the same ruleset loaded by the real `nft -f`, minus the flowtable
  and its `flow add` rules when the kernel refuses them (one built without CONFIG_NF_FLOW_TABLE).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flowpath
from flowpath.outputs import write_private
from flowpath.testbed.netns import Netns, Testbed, TestbedError

KINDS = ("flowpath", "linux")

H1_MAC, LAN_MAC = "02:00:00:00:01:0a", "02:00:00:00:01:01"
WAN_MAC, H2_MAC = "02:00:00:00:02:01", "02:00:00:00:02:fe"
H1_V4, H1_V6 = "192.168.1.10", "2001:db8:1::10"
LAN_V4, LAN_V6 = "192.168.1.1", "2001:db8:1::1"
WAN_V4, WAN_V6 = "203.0.113.1", "2001:db8:ff::1"
H2_V4, H2_V6 = "203.0.113.254", "2001:db8:ff::fe"

# The gateway's addresses and routes, `ip -batch` lines both kinds share (examples/gateway.ip without
# its static neighbours).
ADDRESSES = f"""\
link set lan0 up
link set wan0 up
addr add {LAN_V4}/24 dev lan0
addr add {LAN_V6}/64 dev lan0
addr add {WAN_V4}/24 dev wan0
addr add {WAN_V6}/64 dev wan0
route add default via {H2_V4} dev wan0
-6 route add default via {H2_V6} dev wan0
"""
# flowpath's network file: each port an existing kernel interface, its MAC and MTU read from it.
NETWORK = "link add lan0\nlink add wan0\n" + ADDRESSES

# examples/gateway.nft, with the masquerade in an inet table so that IPv6 is NATed too (h2 has no
# route back to the LAN in either family).
RULESET = """\
flush ruleset

define LAN = "lan0"
define WAN = "wan0"

table inet filter {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
		counter
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname "lo" accept
		iifname $LAN accept
		meta l4proto { icmp, ipv6-icmp } accept
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto { tcp, udp } flow add @ft
		ct state established,related accept
		ct state invalid drop
		iifname $LAN oifname $WAN accept
	}
}

table inet nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname $WAN masquerade
	}
}
"""


def repo_root() -> Path:
    """The directory holding the flowpath package this process runs (PYTHONPATH for children)."""
    return Path(flowpath.__file__).resolve().parent.parent


def flowpath_argv(*args: str) -> list[str]:
    """The `flowpath` command of this interpreter and source tree."""
    return [sys.executable, "-m", "flowpath", *map(str, args)]


def flowpath_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo_root()) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def without_flowtable(ruleset: str) -> str:
    """The ruleset minus `flowtable NAME { ... }` blocks and `flow add|offload @NAME` rules, each
    removed line left blank so that nft's line numbers still point into the original file."""
    out, depth = [], 0
    for line in ruleset.splitlines():
        if depth == 0 and re.match(r"\s*flowtable\s+\S+\s*\{", line):
            depth = line.count("{") - line.count("}")
            out.append("")
        elif depth > 0:
            depth += line.count("{") - line.count("}")
            out.append("")
        elif re.search(r"\bflow\s+(add|offload)\s+@", line):
            out.append("")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class FlowpathGateway:
    """`flowpath run` in the gateway's namespace, inspected and steered through `flowpath ctl`."""

    kind = "flowpath"
    config_error_exit = 2  # flowpath's exit code for a file that does not parse (file:line:col)

    def __init__(self, ns: Netns, workdir: Path, run_args=(), ready_timeout_s: float = 180):
        self.ns, self.workdir = ns, workdir
        self.run_args = tuple(run_args)
        self.ready_timeout_s = ready_timeout_s
        self.ctl_path = workdir / "ctl.sock"
        self.stats_path = workdir / "stats.json"
        self.log_path = workdir / "flowpath-run.log"
        self.proc: subprocess.Popen | None = None

    def start(self, network: str, ruleset: str) -> None:
        net, rules = self.workdir / "gw.ip", self.workdir / "gw.nft"
        write_private(net, network)  # network files may hold SA keys (issue 14's testbed writes some)
        write_private(rules, ruleset)
        argv = flowpath_argv(
            "run", "-n", net, "-r", rules, "--ctl", self.ctl_path, "--stats", self.stats_path
        )
        with open(self.log_path, "wb") as log:
            self.proc = self.ns.popen(
                *argv, *self.run_args, stdout=log, stderr=subprocess.STDOUT, env=flowpath_env()
            )
        self.wait_ready()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self) -> None:
        """Until `ctl stats --json` answers (a build without the control socket: until run says it is
        running); TestbedError with the log when it exits or never gets there."""
        has_ctl = importlib.util.find_spec("flowpath.ctl") is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TestbedError(f"flowpath run exited {self.proc.returncode} before ready:\n{self.log()}")
            if has_ctl and self.ctl_path.exists() and self.ctl("stats", "--json").returncode == 0:
                return
            if not has_ctl and "flowpath: running on" in self.log():
                return
            time.sleep(0.2)
        raise TestbedError(f"flowpath run not ready after {self.ready_timeout_s} s:\n{self.log()}")

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`flowpath ctl --ctl SOCK ARGS` (the socket is a path: reachable from any namespace)."""
        argv = flowpath_argv("ctl", "--ctl", self.ctl_path, *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=flowpath_env())

    def stats(self) -> dict:
        p = self.ctl("stats", "--json")
        if p.returncode != 0:
            raise TestbedError(f"flowpath ctl stats --json: exit {p.returncode}: {p.stderr}")
        return json.loads(p.stdout)

    def nft_load(self, path: Path) -> subprocess.CompletedProcess:
        return self.ctl("nft", "-f", str(path))

    def list_ruleset(self) -> str:
        return self.ctl("nft", "list", "ruleset").stdout

    def neigh_show(self) -> str:
        return self.ctl("ip", "neigh", "show").stdout

    def terminate(self, timeout_s: float = 5) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after timeout_s, seconds it took)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - t0


class LinuxGateway:
    """The gateway namespace's own kernel forwards; `nft` and `ip` are the real ones."""

    kind = "linux"
    config_error_exit = 1  # nft(8) exits 1 on any error

    def __init__(self, ns: Netns, workdir: Path):
        self.ns, self.workdir = ns, workdir
        self.offload: bool | None = None  # does this kernel take the flowtable? (known after start)

    def start(self, network: str, ruleset: str) -> None:
        lines = [ln for ln in network.splitlines() if ln.strip() and not ln.startswith("link add")]
        # No duplicate address detection: the address is usable at once, as flowpath's is.
        lines = [ln + " nodad" if re.match(r"addr add \S+:\S*/", ln) else ln for ln in lines]
        # iproute2's -batch takes no per-line family option; the address gives the family anyway.
        lines = [re.sub(r"^-[46] ", "", ln) for ln in lines]
        self.ns.run("ip", "-batch", "-", input="\n".join(lines) + "\n")
        self.ns.sysctl("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        rules = self.workdir / "gw.nft"
        rules.write_text(ruleset)
        self.offload = self.ns.run("nft", "-f", rules, check=False).returncode == 0
        if not self.offload:
            p = self.nft_load(rules)
            if p.returncode != 0:
                raise TestbedError(f"nft -f {rules} (flowtable removed): {p.stderr}")

    def nft_load(self, path: Path) -> subprocess.CompletedProcess:
        """nft -f PATH; on a kernel without flowtables, the same file with those lines blanked (a copy
        under kernel/ with the same name, so errors still read NAME:line:col)."""
        path = Path(path)
        if not self.offload:
            copy = self.workdir / "kernel" / path.name
            copy.parent.mkdir(exist_ok=True)
            copy.write_text(without_flowtable(path.read_text()))
            path = copy
        return self.ns.run("nft", "-f", path, check=False)

    def list_ruleset(self) -> str:
        return self.ns.run("nft", "list", "ruleset").stdout

    def neigh_show(self) -> str:
        return self.ns.run("ip", "neigh", "show").stdout


class GatewayTopology:
    """h1 -- gw -- h2 with a gateway of the given kind; a context manager (teardown also on error).

    h1, gw, h2    the namespaces (Netns); hosts' interfaces are eth0
    gateway       FlowpathGateway or LinuxGateway
    workdir       files of this topology (network file, rulesets, logs, ctl socket), removed at close
    """

    def __init__(self, kind: str, ruleset: str = RULESET, run_args=(), prefix: str = "fpt"):
        if kind not in KINDS:
            raise ValueError(f"gateway kind {kind!r}: one of {', '.join(KINDS)}")
        self.kind, self.ruleset, self.run_args = kind, ruleset, run_args
        self.testbed = Testbed(prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix=self.testbed.prefix))
        self.gateway = None

    def __enter__(self) -> GatewayTopology:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def up(self) -> None:
        tb = self.testbed
        self.h1, self.gw, self.h2 = tb.add_netns("h1"), tb.add_netns("gw"), tb.add_netns("h2")
        tb.veth(self.h1, "eth0", self.gw, "lan0", H1_MAC, LAN_MAC)
        tb.veth(self.gw, "wan0", self.h2, "eth0", WAN_MAC, H2_MAC)
        for ns, v4, v6 in ((self.h1, H1_V4, H1_V6), (self.h2, H2_V4, H2_V6)):
            ns.ip("addr", "add", f"{v4}/24", "dev", "eth0")
            ns.ip("addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
        self.h1.ip("route", "add", "default", "via", LAN_V4)
        self.h1.ip("-6", "route", "add", "default", "via", LAN_V6)
        if self.kind == "flowpath":
            self.gateway = FlowpathGateway(self.gw, self.workdir, self.run_args)
            self.gateway.start(NETWORK, self.ruleset)
        else:
            self.gateway = LinuxGateway(self.gw, self.workdir)
            self.gateway.start(NETWORK, self.ruleset)

    def close(self) -> None:
        try:
            self.testbed.close()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

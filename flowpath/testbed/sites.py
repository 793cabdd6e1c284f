"""sunset -- west ==ESP== east -- sunrise: the seeds' four-box IPsec testbed in network namespaces.

No Linux counterpart: the bench of the 2025 Linux IPsec pCPU test report (RFC 9611 topology), built
with `ip netns` on one machine; `flowpath testbed up|down|status` drives it.

    sunset               west                                      east                  sunrise
    eth0 10.1.0.5/16 -- lan0 10.1.0.1/16                           lan0 10.2.0.1/16 -- eth0 10.2.0.7/16
                         wan0 192.0.2.1/24 ======= ESP ======= wan0 192.0.2.2/24

The hosts are plain Linux (addresses, a default route, offloads on). The gateways are `flowpath run`
(kind "flowpath": the kernel's lan0/wan0 carry no address, flowpath owns them and resolves its
neighbours itself) or the namespace's own kernel (kind "linux": the same `ip -batch` lines and
ruleset; the kernel's ESP where it has one, else plain routing, said so). Keys and SPIs are drawn
from os.urandom for every `up`; the network files, the ruleset and a state JSON (namespaces, pids,
SAs) go to a root-only state directory, written 0600, so that `down` finds everything again after a
crash, and a user can copy the configs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from flowpath.outputs import write_private
from flowpath.testbed.gateway import FlowpathGateway, LinuxGateway
from flowpath.testbed.netns import Netns, Testbed, TestbedError, _run, require_netns

KINDS = ("flowpath", "linux")
ROLES = ("sunset", "west", "east", "sunrise")
GATEWAYS = ("west", "east")
STATE_ROOT = Path("/run/flowpath/testbed")
PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
AEAD = "rfc4106(gcm(aes))"  # AES-GCM-128, 128-bit ICV: a 16-byte key and a 4-byte salt
AEAD_KEY_BYTES, ICV_BITS = 20, 128

# role: (its interfaces on each side, the kernel's MAC for each), examples/ipsec's MACs
LINKS = (  # (ns a, dev a, mac a, ns b, dev b, mac b); the WAN link second (--mtu)
    ("sunset", "eth0", "02:00:00:00:01:05", "west", "lan0", "02:00:00:00:01:01"),
    ("west", "wan0", "02:00:00:00:02:01", "east", "wan0", "02:00:00:00:02:02"),
    ("east", "lan0", "02:00:00:00:03:01", "sunrise", "eth0", "02:00:00:00:03:07"),
)
SITE = {  # gateway: (its LAN prefix, LAN address, WAN address, the peer's WAN address, the peer's LAN)
    "west": ("10.1.0.0/16", "10.1.0.1", "192.0.2.1", "192.0.2.2", "10.2.0.0/16"),
    "east": ("10.2.0.0/16", "10.2.0.1", "192.0.2.2", "192.0.2.1", "10.1.0.0/16"),
}
HOSTS = {"sunset": ("10.1.0.5", "10.1.0.1"), "sunrise": ("10.2.0.7", "10.2.0.1")}  # host: (addr/16, gw)

# examples/ipsec/gateway.nft: the sites talk through the tunnel, nothing else is forwarded, and
# established flows are offloaded (with their ESP) to the flowtable on both gateways.
RULESET = """\
flush ruleset

define SITES = { 10.1.0.0/16, 10.2.0.0/16 }

table inet filter {
	flowtable ft {
		hook ingress priority filter
		devices = { lan0, wan0 }
		counter
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		meta l4proto esp accept
		udp dport { 500, 4500 } accept
		meta l4proto { icmp, ipv6-icmp } accept
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto { tcp, udp } flow add @ft
		ct state established,related accept
		ct state invalid drop
		ip saddr $SITES ip daddr $SITES accept
	}
}
"""


@dataclass
class Sa:
    """One ESP SA of the tunnel (struct xfrm_usersa_info's id, reqid and the aead key)."""

    src: str
    dst: str
    spi: int
    reqid: int
    key: str  # hex, AEAD_KEY_BYTES: key then salt, as `ip xfrm` takes it

    @classmethod
    def random(cls, src: str, dst: str, reqid: int) -> Sa:
        # SPIs 0-255 are reserved (RFC 4303 §2.1)
        spi = 0x100 + int.from_bytes(os.urandom(4), "big") % (0xFFFFFFFF - 0x100)
        return cls(src, dst, spi, reqid, os.urandom(AEAD_KEY_BYTES).hex())

    def state_line(self, verb: str = "add") -> str:
        return (f"xfrm state {verb} src {self.src} dst {self.dst} proto esp spi {self.spi:#x} reqid {self.reqid} "
                f"mode tunnel replay-window 64 aead '{AEAD}' 0x{self.key} {ICV_BITS}")  # fmt: skip


def tunnel_sas(reqid_base: int = 1) -> dict[str, Sa]:
    """A fresh SA pair: "west>east" (west encrypts, east decrypts) and "east>west"."""
    return {
        "west>east": Sa.random("192.0.2.1", "192.0.2.2", reqid_base),
        "east>west": Sa.random("192.0.2.2", "192.0.2.1", reqid_base + 1),
    }


def policy_lines(gw: str, sas: dict[str, Sa], verb: str = "add") -> list[str]:
    """The gateway's SPD: its site to the other leaves through its outbound SA (dir out), the other
    site's traffic must have come through the inbound SA (dir fwd, and dir in for the gateway)."""
    peer = "east" if gw == "west" else "west"
    lan, _, _, _, peer_lan = SITE[gw]
    out, inb = sas[f"{gw}>{peer}"], sas[f"{peer}>{gw}"]
    tmpl = "tmpl src {0.src} dst {0.dst} proto esp reqid {0.reqid} mode tunnel"
    return [f"xfrm policy {verb} src {lan} dst {peer_lan} dir out " + tmpl.format(out)] + [
        f"xfrm policy {verb} src {peer_lan} dst {lan} dir {d} " + tmpl.format(inb) for d in ("fwd", "in")
    ]


def network_file(gw: str, sas: dict[str, Sa] | None) -> str:
    """The gateway's `ip -batch` network file; no static neighbours (flowpath resolves them).
    sas None: plain routing (Linux gateways on a kernel without ESP)."""
    lan, lan_addr, wan_addr, peer_wan, peer_lan = SITE[gw]
    lines = [
        f"# {gw}: generated by `flowpath testbed up`: "
        + (
            "ESP tunnel mode between the sites, keys made for this run: keep this file private (0600)"
            if sas
            else "plain routing between the sites (no ESP)"
        ),
        "link add lan0",
        "link add wan0",
        "link set lan0 up",
        "link set wan0 up",
        f"addr add {lan_addr}/16 dev lan0",
        f"addr add {wan_addr}/24 dev wan0",
        f"route add {peer_lan} via {peer_wan} dev wan0",
    ]
    if sas:
        lines += [sa.state_line() for sa in sas.values()] + policy_lines(gw, sas)
    return "\n".join(lines) + "\n"


def state_dir(prefix: str) -> Path:
    return STATE_ROOT / prefix


def ns_names(prefix: str) -> dict[str, str]:
    return {role: f"{prefix}-{role}" for role in ROLES}


def check_prefix(prefix: str) -> None:
    if not PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"--prefix {prefix!r}: 1-32 letters, digits, '-' or '_', starting with a letter or digit"
        )


def existing_namespaces() -> set[str]:
    p = _run(["ip", "netns", "list"], False, 10)
    return {line.split()[0] for line in p.stdout.splitlines() if line.strip()}


def kernel_esp(ns: Netns, sa: Sa) -> str | None:
    """None when the namespace's kernel takes the SA (it has ESP and the AEAD), else why not. The SA
    is removed again either way."""
    p = ns.run("ip", *sa.state_line().replace("'", "").split(), check=False)
    ns.run("ip", "xfrm", "state", "flush", check=False)
    if p.returncode == 0:
        return None
    why = (p.stderr or p.stdout).strip().splitlines()
    modprobe = shutil.which("modprobe")
    if modprobe:
        m = subprocess.run([modprobe, "esp4"], capture_output=True, text=True)
        mp = "loaded" if m.returncode == 0 else (m.stderr.strip() or f"exit {m.returncode}")
    else:
        mp = "no modprobe on this system"
    return f"ip xfrm state add: {why[0] if why else 'refused'}; modprobe esp4: {mp}"


class Sites:
    """The four namespaces, their links and the two gateways; `up()` builds them and saves the state,
    `down(prefix)` tears down whatever of it is left (also after a crash)."""

    def __init__(self, prefix: str = "fp", kind: str = "flowpath", workers: int | None = None,
                 mtu: int | None = None, say=print, esp: bool = True, run_args=()):  # fmt: skip
        check_prefix(prefix)
        if kind not in KINDS:
            raise ValueError(f"--gateways {kind!r}: one of {', '.join(KINDS)}")
        self.prefix, self.kind, self.workers, self.mtu, self.say = prefix, kind, workers, mtu, say
        self.run_args = tuple(run_args)  # more `flowpath run` options (bench live: --profile-phases)
        self.dir = state_dir(prefix)
        self.ns: dict[str, Netns] = {}
        self.gateways: dict[str, FlowpathGateway | LinuxGateway] = {}
        self.sas: dict[str, Sa] | None = None
        # does traffic between the sites go through ESP? esp=False: plain routing for both kinds (no
        # SAs, no policies), the comparison `flowpath bench live` draws beside the tunnel
        # (Linux gateways: until up() finds the kernel without ESP)
        self.esp = esp
        self.plain_asked = not esp
        self.note = "" if esp else "plain routing asked for (no SAs, no policies)"

    # ---- up --------------------------------------------------------------------------------------
    def up(self) -> None:
        """Build everything; on any failure tear down what was built and raise TestbedError."""
        reason = require_netns()
        if reason:
            raise TestbedError(f"testbed: {reason}")
        names = ns_names(self.prefix)
        clash = sorted(set(names.values()) & existing_namespaces())
        if clash or self.dir.exists():
            what = f"namespace {clash[0]} exists" if clash else f"{self.dir} exists"
            raise TestbedError(f"testbed {self.prefix!r} is up already ({what}): "
                               f"`flowpath testbed down --prefix {self.prefix}` first")  # fmt: skip
        try:
            self._up()
        except BaseException:
            down(self.prefix, say=lambda _: None)
            raise

    def _up(self) -> None:
        self.dir.mkdir(parents=True, mode=0o700)
        tb = Testbed(self.prefix, unique=False)
        for role in ROLES:
            self.ns[role] = tb.add_netns(role)
        self._save()  # from here on `down` finds the namespaces by the state file
        for k, (a, a_dev, a_mac, b, b_dev, b_mac) in enumerate(LINKS):
            tb.veth(self.ns[a], a_dev, self.ns[b], b_dev, a_mac, b_mac, mtu=self.mtu if k == 1 else None)
        for host, (addr, gw) in HOSTS.items():
            self.ns[host].ip("addr", "add", f"{addr}/16", "dev", "eth0")
            self.ns[host].ip("route", "add", "default", "via", gw)
        self.sas = tunnel_sas()
        if self.kind == "linux" and not self.plain_asked:
            why = kernel_esp(self.ns["west"], self.sas["west>east"])
            if why:
                self.esp = False
                self.note = (f"this kernel has no ESP ({why}): the Linux gateways route between the sites "
                             "in clear, without IPsec")  # fmt: skip
                self.say(f"flowpath testbed: {self.note}")
        sas = self.sas if self.esp else None
        files = {"west.ip": network_file("west", sas), "east.ip": network_file("east", sas),
                 "gateway.nft": RULESET}  # fmt: skip
        for name, text in files.items():
            write_private(self.dir / name, text)
        self._save()
        run_args = (() if self.workers is None else ("--workers", str(self.workers))) + self.run_args
        for gw in GATEWAYS:
            workdir = self.dir / gw
            workdir.mkdir(mode=0o700)
            self.gateways[gw] = (FlowpathGateway(self.ns[gw], workdir, run_args) if self.kind == "flowpath"
                                 else LinuxGateway(self.ns[gw], workdir))  # fmt: skip
        # both gateways start (and compile, when the numba cache is cold) at the same time
        with ThreadPoolExecutor(len(GATEWAYS)) as pool:
            futures = [pool.submit(self._start, gw, files[f"{gw}.ip"]) for gw in GATEWAYS]
            for f in futures:
                f.result()
        lin = [gw for gw, g in self.gateways.items() if getattr(g, "offload", True) is False]
        if lin:
            self.note += (
                "; " if self.note else ""
            ) + "this kernel has no flowtable: the Linux gateways load the ruleset without it"
            self.say(f"flowpath testbed: {self.note.split('; ')[-1]}")
        self._save()

    def _start(self, gw: str, network: str) -> None:
        g = self.gateways[gw]
        try:
            g.start(network, RULESET)
        except TestbedError as e:
            raise TestbedError(f"{gw}: {e}") from None
        finally:
            self._save()  # a started process's pid is in the state file even when it never got ready

    def _save(self) -> None:
        pids = {gw: g.proc.pid for gw, g in self.gateways.items() if getattr(g, "proc", None) is not None}
        state = {
            "prefix": self.prefix,
            "gateways": self.kind,
            "esp": self.esp,
            "note": self.note,
            "workers": self.workers,
            "mtu": self.mtu,
            "namespaces": {role: ns.name for role, ns in self.ns.items()},
            "pids": pids,
            "ctl": {gw: str(g.ctl_path) for gw, g in self.gateways.items() if hasattr(g, "ctl_path")},
            "sas": {k: asdict(sa) for k, sa in (self.sas or {}).items()} if self.esp else {},
            "files": {gw: str(self.dir / f"{gw}.ip") for gw in GATEWAYS}
            | {"ruleset": str(self.dir / "gateway.nft")},
        }
        write_private(self.dir / "state.json", json.dumps(state, indent=2) + "\n")

    def summary(self) -> str:
        """What `up` prints: the topology, where the configs are, how to reach the gateways."""
        n = ns_names(self.prefix)
        lines = [
            f"testbed {self.prefix!r} up: {n['sunset']} (10.1.0.5) -- {n['west']} "
            f"{'==ESP==' if self.esp else '--'} {n['east']} -- {n['sunrise']} (10.2.0.7); "
            f"{self.kind} gateways" + (f", west--east MTU {self.mtu}" if self.mtu else ""),
            f"configs (0600, keys made for this run): {self.dir}/west.ip, east.ip, gateway.nft; state {self.dir}/state.json",
        ]
        if self.kind == "flowpath":
            for gw in GATEWAYS:
                g = self.gateways[gw]
                lines.append(f"{gw}: flowpath run pid {g.proc.pid}; flowpath ctl --ctl {g.ctl_path} stats; "
                             f"log {g.log_path}")  # fmt: skip
        elif self.note:
            lines.append(f"note: {self.note}")
        lines.append(
            f"try: ip netns exec {n['sunset']} ping 10.2.0.7; flowpath testbed down --prefix {self.prefix}"
        )
        return "\n".join(lines)


# ---- down and status -------------------------------------------------------------------------------
def load_state(prefix: str) -> dict | None:
    """The state file of a testbed, None when there is none (or it cannot be read: `down` falls back
    to the namespace names)."""
    try:
        return json.loads((state_dir(prefix) / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _pid_alive_in(pid: int, ns: str) -> bool:
    """The pid lives, and in our namespace (a reused pid elsewhere is never signalled)."""
    return pid in Netns(ns).pids()


def down(prefix: str, say=print, grace_s: float = 3.0) -> list[str]:
    """Tear down the testbed `prefix`: SIGTERM its gateway processes (SIGKILL after grace_s), kill
    whatever else lives in its namespaces, delete them (their veths go with them), remove the state
    directory. Works from the state file or, when that is gone, from the namespace names. Returns
    what was removed; TestbedError when something could not be."""
    check_prefix(prefix)
    state = load_state(prefix) or {}
    names = set(state.get("namespaces", {}).values()) | set(ns_names(prefix).values())
    present = names & existing_namespaces()
    gw_ns = state.get("namespaces", {})
    done, errors = [], []
    stopping = []
    for gw, pid in state.get("pids", {}).items():
        ns = gw_ns.get(gw)
        if ns in present and _pid_alive_in(pid, ns):
            os.kill(pid, signal.SIGTERM)
            stopping.append((gw, pid, ns))
    deadline = time.monotonic() + grace_s
    for gw, pid, ns in stopping:
        while _pid_alive_in(pid, ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive_in(pid, ns):
            os.kill(pid, signal.SIGKILL)
            done.append(f"{gw}: flowpath run pid {pid} killed (no exit {grace_s:g} s after SIGTERM)")
        else:
            done.append(f"{gw}: flowpath run pid {pid} stopped")
    for name in sorted(present):
        try:
            Netns(name).stop_procs()
        except TestbedError as e:
            errors.append(str(e))
        p = _run(["ip", "netns", "del", name], False, 30)
        if p.returncode != 0 and name in existing_namespaces():
            errors.append(f"ip netns del {name}: {p.stderr.strip()}")
        else:
            done.append(f"namespace {name} deleted")
    d = state_dir(prefix)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            errors.append(f"{d}: could not be removed")
        else:
            done.append(f"{d} removed")
    for line in done:
        say(line)
    if errors:
        raise TestbedError("testbed down: " + "; ".join(errors))
    return done


def status(prefix: str) -> tuple[str, bool]:
    """(report, complete): namespaces, gateway processes and each gateway's `ctl stats` totals;
    complete is False when anything of the testbed is missing or dead."""
    from flowpath.ctl.client import ctl_call
    from flowpath.ctl.commands import format_stats
    from flowpath.errors import CtlError

    check_prefix(prefix)
    state = load_state(prefix)
    names = (state or {}).get("namespaces") or ns_names(prefix)
    present = existing_namespaces()
    if state is None and not set(names.values()) & present:
        return (
            f"testbed {prefix!r}: not up (no {state_dir(prefix)}/state.json, no namespace {prefix}-*)",
            False,
        )
    ok = state is not None
    lines = [f"testbed {prefix!r}: " + (f"{state['gateways']} gateways, "
             f"{'ESP tunnel' if state['esp'] else 'plain routing'}"
             + (f", west--east MTU {state['mtu']}" if state.get("mtu") else "") + f"; state {state_dir(prefix)}"
             if state else f"no state file in {state_dir(prefix)} (crashed? `flowpath testbed down` cleans up)")]  # fmt: skip
    if state and state.get("note"):
        lines.append(f"note: {state['note']}")
    for role in ROLES:
        there = names.get(role) in present
        ok &= there
        lines.append(f"namespace {names.get(role)}: {'present' if there else 'MISSING'}")
    for gw, pid in ((state or {}).get("pids") or {}).items():
        alive = names.get(gw) in present and _pid_alive_in(pid, names[gw])
        ok &= alive
        lines.append(f"{gw}: flowpath run pid {pid} {'running' if alive else 'NOT RUNNING'}")
        if not alive:
            continue
        try:
            r = ctl_call(state["ctl"][gw], {"argv": ["stats", "--json"]}, timeout_s=10)
            p = json.loads(r["out"])
            lines += ["  " + ln for ln in format_stats(p).splitlines()[1:4]]
        except (CtlError, ValueError, KeyError) as e:
            ok = False
            lines.append(f"  ctl stats: {e}")
    return "\n".join(lines), ok

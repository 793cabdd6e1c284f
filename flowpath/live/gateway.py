"""`flowpath run`: the live gateway — ports on kernel interfaces, one poll loop, a control socket.

No Linux counterpart as a whole: it plays a NIC driver's NAPI loop (net_rx_action over the ports'
queues, with a budget per poll) plus the timers (the GC once a second, neighbour and reassembly
timers) and the control plane (rtnetlink/nfnetlink requests, arriving on the control socket), all in
one thread. Between two polls nothing else touches the datapath, so control requests need no locks.

With `--workers N` (N > 1) there are N such loops, one thread each (flowpath.workers.Workers: worker c
pinned to CPU c when there are that many), each on its own sockets of every port: its receive ring
joins the port's PACKET_FANOUT group, whose program (ports/fanout.py) hands it the frames
packet/steer.py names it for, and it transmits on its own ring. Worker 0's loop, on the main thread,
also serves the control socket and the signals; the counters are the workers' summed.

The packet clock is CLOCK_MONOTONIC: polls are stamped with it, so flowtable, conntrack, neighbour and
SA timeouts are real time. Idle, the loop sleeps in poll(2) on the ports' descriptors, the control
socket and a signal pipe until the next GC run is due (`busy_poll` spins instead).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowpath.bench.phases import PollPhases
from flowpath.errors import ConfigError, PortError, UsageError
from flowpath.live.xmit import Xmit
from flowpath.net.link import KIND_ETHER
from flowpath.packet.batch import GSO_SLOT, PacketBatch

NSEC_PER_MSEC = 1_000_000
PEER_POLL_MS = 100  # the longest a worker other than 0 sleeps before it looks at `stopping`


@dataclass
class RunOptions:
    """What `flowpath run` was asked."""

    net: Path
    rules: Path | None = None
    ctl: Path | None = None  # None: flowpath.ctl.server.default_ctl_path()
    ctl_mode: int = 0o600
    stats: Path | None = None
    flowtable: bool = True
    bulk: bool = True
    busy_poll: bool = False
    rx_ring: str = "v2"  # AfPacketPort's receive ring: "v2" hands each packet over at once, "v3" by blocks
    batch_size: int = 256
    workers: int = 1
    profile_phases: bool = False  # time the loop's phases (flowpath.bench.phases)


def load_config(net_path: Path, rules_path: Path | None, kernel):
    """The network file, each port resolved against its kernel interface and checked (check_ports),
    and the ruleset. ConfigError with file:line:col on the first problem."""
    from flowpath.config.ipbatch import load_network
    from flowpath.config.nft import load_ruleset

    net = load_network(net_path, kernel.kernel_link)
    check_ports(net, kernel.port_addresses)
    ruleset = load_ruleset(rules_path) if rules_path is not None else None
    return net, ruleset


def port_links(net) -> list:
    """The links that are ports: one kernel interface each."""
    return [lk for lk in net.links.values() if lk.kind == KIND_ETHER]


def check_ports(net, addresses: Callable[[str], list[str]]) -> None:
    """The kernel side of a port carries no IP address: flowpath owns the port's addresses, and an
    address there would have the kernel answer ARP, ICMP and TCP beside flowpath. ConfigError at the
    port's `link add` line. (IPv6 link-local addresses are not counted: prepare_port disables IPv6 on
    the port, which removes them.)"""
    for lk in port_links(net):
        found = addresses(lk.name)
        if found:
            raise net.link_origin[lk.name](
                f'the kernel interface "{lk.name}" has address {", ".join(found)}: flowpath owns the '
                f"addresses of its ports; remove it first (ip addr flush dev {lk.name})"
            )


class Gateway:
    """The running gateway: its Worker, ports and control server (the `gw` the ctl commands get).

    worker      flowpath.datapath.Worker, or with --workers N > 1 flowpath.workers.Workers
    cpus        the Workers, one per CPU ([worker] with one)
    ports       name -> Port (flowpath.ports.base): worker 0's; wports[c] worker c's
    net_path, rules_path, started_ns (CLOCK_MONOTONIC)

    kernel and open_port are what the gateway asks of the kernel: interfaces (kernel_link,
    port_addresses, prepare_port, restore_port: flowpath.ports.kernel_if) and ports (AF_PACKET);
    tests give their own. warm: load the compiled kernels first (flowpath.live.warm).
    """

    def __init__(self, opts: RunOptions, log: Callable[[str], None] = print, *, kernel=None, open_port=None,
                 warm: bool = True):  # fmt: skip
        from flowpath.datapath import Worker

        if kernel is None:
            from flowpath.ports import kernel_if as kernel
        if opts.workers < 1:
            raise UsageError("--workers must be at least 1")
        if not 1 <= opts.batch_size <= 4096:
            raise UsageError("--batch must be 1..4096")
        self.opts, self.log = opts, log
        self.net_path, self.rules_path = opts.net, opts.rules
        self.kernel = kernel
        net, ruleset = load_config(opts.net, opts.rules, kernel)
        has_sas = bool(getattr(getattr(net, "xfrm", None), "states", None))
        # TCP super-packets stay whole through the fast path (GSO passthrough), except on a gateway
        # with SAs: ESP output takes ordinary packets only, and a super-packet of an ESP flow would
        # be cut on the classic path, one segment at a time; there the ports cut them on receive.
        self.gso = not has_sas
        if warm:  # before the ports open: nothing waits in their rings meanwhile
            from flowpath.live.warm import warm_datapath

            warm_datapath(opts.bulk, ipsec=has_sas)
        self.n = n = opts.workers
        if n == 1:
            self.worker = Worker(net, ruleset, flowtable=opts.flowtable, bulk=opts.bulk)
            self.cpus = [self.worker]
        else:
            from flowpath.workers import Workers

            self.worker = Workers(net, ruleset, n=n, flowtable=opts.flowtable, bulk=opts.bulk)
            self.cpus = self.worker.workers
        self.wports: list[dict[str, object]] = [{} for _ in range(n)]
        self.ports = self.wports[0]
        self._failed: set = set()  # ports whose interface went away
        self.xmits = [Xmit({}) for _ in range(n)]
        self.xmit = self.xmits[0]
        self._rxs: list[list] = [[] for _ in range(n)]
        self._stale = [False] * n
        self._threads: list[threading.Thread] = []
        self._thread_error: BaseException | None = None
        self.restore: list = []
        self.ctl = None
        self._open_port = open_port or _open_af_packet
        # the ports keep TCP super-packets whole
        self.batches = [PacketBatch(opts.batch_size, slot=GSO_SLOT) for _ in range(n)]
        self.batch = self.batches[0]
        self.phases = PollPhases() if opts.profile_phases else None
        self.stopping = False
        self.reload_pending = False
        self.running = threading.Event()  # set once run() handles the signals
        self.started_ns = time.monotonic_ns()
        try:
            for lk in port_links(net):
                self.restore.append(kernel.prepare_port(lk.name))
                for c in range(n):  # in worker order: a fanout group numbers its sockets as they join
                    kw = {} if n == 1 else {"fanout": (self.ports[lk.name].fanout_id if c else None, n)}
                    self.wports[c][lk.name] = port = self._open_port(lk, opts, gso=self.gso, **kw)
                    if warm:
                        port.warm(self.batches[c])
            self._ifindex_ports()
            self._start_ctl()
        except BaseException:
            self.close()
            raise

    def _ifindex_ports(self, cpus=None) -> None:
        """ifindex -> port for transmit, per worker: each running port's link, and VLAN links on it."""
        net = self.worker.net
        for c in range(self.n) if cpus is None else cpus:
            self._rxs[c] = rx = [port for port in self.wports[c].values() if port not in self._failed]
            by_ifx = {net.link_by_name(port.name).ifindex: port for port in rx}
            for lk in net.links.values():
                if lk.parent in by_ifx:
                    by_ifx[lk.ifindex] = by_ifx[lk.parent]
            dropped = self.xmits[c].dropped
            self.xmits[c] = Xmit(by_ifx)
            self.xmits[c].dropped = dropped  # a reload keeps the counts
        self._rx, self.xmit = self._rxs[0], self.xmits[0]

    def _start_ctl(self) -> None:
        from flowpath.ctl.commands import ctl_dispatch
        from flowpath.ctl.server import CtlServer, default_ctl_path

        path = self.opts.ctl or default_ctl_path()
        self.ctl = CtlServer(path, lambda req: ctl_dispatch(self, req), mode=self.opts.ctl_mode)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict:
        """Poll until SIGTERM/SIGINT; return the final counters (written to --stats too)."""
        rfd, wfd = socket.socketpair()
        rfd.setblocking(False)
        wfd.setblocking(False)
        old_fd = signal.set_wakeup_fd(wfd.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.running.set()  # the signals are ours from here on
        try:
            for c in range(1, self.n):
                t = threading.Thread(
                    target=self._peer_loop, args=(c,), name=f"flowpath-worker{c}", daemon=True
                )
                t.start()
                self._threads.append(t)
            if self.n > 1:
                self.worker.thread_init(0)
            self._loop(rfd)
        finally:
            self.stopping = True
            for t in self._threads:
                t.join()
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_fd)
            rfd.close()
            wfd.close()
        if self._thread_error is not None:
            raise self._thread_error
        for c in range(self.n):
            self._flush(c)
        return self.write_stats()

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self.reload_pending = True
        else:
            self.stopping = True

    def _pollset(self, rfd) -> select.poll:
        """poll(2) over the signal pipe and the ports (the control socket's are added by _sync_ctl)."""
        p = select.poll()
        self._sig_fd, self._ctl_reg = rfd.fileno(), {}
        p.register(self._sig_fd, select.POLLIN)
        for port in self._rx:
            if port.fileno() >= 0:
                p.register(port.fileno(), select.POLLIN)
        if self.n > 1:  # packets other workers hand this one (Workers.wake_fd)
            p.register(self.worker.wake_fd(0), select.POLLIN)
        self._stale[0] = False
        self._sync_ctl(p)
        return p

    def _sync_ctl(self, p: select.poll) -> None:
        """Register what the control server waits for now (new clients, replies being written)."""
        if self.ctl is None:
            return
        want = dict(self.ctl.poll_events())
        if want != self._ctl_reg:
            for fd in self._ctl_reg.keys() - want.keys():
                p.unregister(fd)
            for fd, ev in want.items():
                if self._ctl_reg.get(fd) != ev:
                    p.register(fd, ev)
            self._ctl_reg = want

    def _loop(self, rfd) -> None:
        w, batch, busy = self.cpus[0], self.batch, self.opts.busy_poll
        # the thread's CPU time, not the wall clock: gateways sharing a CPU (the testbed's west and east)
        # would otherwise charge each other's slices to whatever phase was running; the kernel's work
        # inside our syscalls (sendto's veth transmit, softirqs run on its way out) is ours to count
        ph, clock = self.phases, time.thread_time_ns
        prof = ph is not None  # per poll: a clock read between phases, never per packet
        p = self._pollset(rfd)
        t_loop = clock() if prof else 0
        while not self.stopping:
            got = 0
            for port in list(self._rx):
                batch.clear()
                if prof:
                    t0 = clock()
                try:
                    n = port.rx_burst(batch, time.monotonic_ns())
                except PortError as e:
                    self._port_failed(port, e, 0)
                    continue
                if prof:
                    t1 = clock()
                    ph.ns["rx"] += t1 - t0
                if n:
                    got += n
                    tx = self._poll(0, batch)
                    if prof:
                        t2 = clock()
                        ph.ns["hook"] += t2 - t1
                    self.xmit.poll(tx)
                    if prof:
                        t3 = clock()
                        ph.ns["xmit"] += t3 - t2
                    self._flush()
                    if prof:
                        ph.ns["kick"] += clock() - t3
                        ph.packets += n
                        ph.polls += 1
            if not got and (w.handing_over or w.deferred):  # handed over by other workers
                self._poll_backlog(0)
            now = time.monotonic_ns()
            if now >= w.next_gc_ns:
                self._timers(0, now)
                if self.ctl is not None:
                    self.ctl.expire(now)  # clients that stall are dropped
                    self._sync_ctl(p)
            if self._thread_error is not None:
                break
            if self._stale[0]:  # a port failed (here or in a flush): its descriptor is closed
                p = self._pollset(rfd)
            if self.reload_pending:
                self.reload_pending = False
                self.reload_files()
            # sleep until a port has frames, a request or a signal arrives, or the next GC run
            timeout = 0 if got or busy else max(0, (w.next_gc_ns - now) // NSEC_PER_MSEC + 1)
            ctl_events = False
            if prof:
                t0 = clock()
            events = p.poll(timeout)
            if prof:
                t1 = clock()
                if not got:
                    ph.ns["wait"] += t1 - t0
            for fd, ev in events:
                if fd == self._sig_fd:
                    _drain(rfd)
                elif self.n > 1 and fd == self.worker.wake_fd(0):
                    _drain_eventfd(fd)
                elif fd in self._ctl_reg:
                    self.ctl.service(fd, ev)
                    ctl_events = True
            if ctl_events:
                self._sync_ctl(p)
            if prof:  # the loop's whole time: "other" is what no phase took (timers, control, poll(0))
                t = clock()
                ph.total_ns += t - t_loop
                t_loop = t

    def _poll(self, c: int, batch: PacketBatch):
        """Worker c's poll of one batch (Worker.poll, or Workers.poll from worker c's thread)."""
        return self.worker.poll(batch) if self.n == 1 else self.worker.poll(c, batch)

    def _poll_backlog(self, c: int) -> None:
        """Worker c polls no new packet: what other workers handed it (its backlog) goes out."""
        batch = self.batches[c]
        batch.clear()
        self.xmits[c].poll(self._poll(c, batch))
        self._flush(c)

    def _timers(self, c: int, now: int) -> None:
        """Worker c's clock when idle (Worker.timers, or Workers.timers under the workers' locks)."""
        frames = self.worker.timers(now) if self.n == 1 else self.worker.timers(c, now)
        for ifx, frame in frames:
            self.xmits[c].frame(ifx, frame)
        self._flush(c)

    def _flush(self, c: int = 0) -> None:
        for port in list(self._rxs[c]):
            try:
                port.flush()
            except PortError as e:
                self._port_failed(port, e, c)

    def _port_failed(self, port, e: PortError, c: int) -> None:
        """A port vanished (its interface was deleted or went away): log it, close it, keep the others.
        With several workers each one's socket fails on its own, and is closed by its worker."""
        who = f" (worker {c})" if self.n > 1 else ""
        self.log(f"flowpath: port {port.name}{who}: {e.msg}; it is closed, the other ports keep running")
        self._failed.add(port)
        self._stale[c] = True
        port.close()
        self._ifindex_ports([c])  # its frames from now on: counted as tx drops (no port)

    def _peer_loop(self, c: int) -> None:
        """Worker c's loop (c >= 1), on its own thread: its sockets of every port, the packets other
        workers hand it, its timers; no control socket or signals (worker 0's). An error ends the
        gateway: it is raised again from run()."""
        ws, w, batch, busy = self.worker, self.cpus[c], self.batches[c], self.opts.busy_poll
        try:
            ws.thread_init(c)
            wake = ws.wake_fd(c)
            p = None
            while not self.stopping:
                if p is None or self._stale[c]:
                    self._stale[c] = False
                    p = select.poll()
                    p.register(wake, select.POLLIN)
                    for port in self._rxs[c]:
                        p.register(port.fileno(), select.POLLIN)
                got = 0
                for port in list(self._rxs[c]):
                    batch.clear()
                    try:
                        n = port.rx_burst(batch, time.monotonic_ns())
                    except PortError as e:
                        self._port_failed(port, e, c)
                        continue
                    if n:
                        got += n
                        self.xmits[c].poll(ws.poll(c, batch))
                        self._flush(c)
                if not got and (w.handing_over or w.deferred):
                    self._poll_backlog(c)
                now = time.monotonic_ns()
                if now >= w.next_gc_ns:
                    self._timers(c, now)
                # bounded, so that SIGTERM (seen by worker 0) ends this loop soon
                timeout = (
                    0 if got or busy else min(PEER_POLL_MS, max(0, (w.next_gc_ns - now) // NSEC_PER_MSEC + 1))
                )
                for fd, _ in p.poll(timeout):
                    if fd == wake:
                        _drain_eventfd(wake)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self._thread_error = e
            self.stopping = True

    # -- control ------------------------------------------------------------------------------------
    def reload_files(self) -> bool:
        """SIGHUP: reload both files atomically (as `ctl nft -f`); on an error the old ones stay and
        the error is logged."""
        try:
            net, ruleset = load_config(self.net_path, self.rules_path, self.kernel)
            if sorted(lk.name for lk in port_links(net)) != sorted(self.ports):
                raise UsageError(
                    f"{self.net_path}: the ports changed; restart flowpath to add or remove ports"
                )
            self.worker.reload(net, ruleset)
        except (ConfigError, UsageError) as e:
            self.log(f"flowpath: reload refused, the running configuration stays:\n{e}")
            return False
        self._ifindex_ports()
        self.log(
            f"flowpath: reloaded {self.net_path}" + (f" and {self.rules_path}" if self.rules_path else "")
        )
        return True

    def port_counters(self) -> dict[str, dict]:
        """Each port's own counters, its frames that found the transmit ring full (tx_dropped) and
        whether it still runs (a vanished port does not)."""
        ports = {}
        for name, port in self.ports.items():
            ifx = self.worker.net.link_by_name(name).ifindex
            c = dict(port.counters())
            for more in self.wports[1:]:  # every worker's socket of the port, summed
                for k, v in more[name].counters().items():
                    c[k] += v
            c["tx_dropped"] = sum(x.dropped.get(ifx, 0) for x in self.xmits)
            c["running"] = port not in self._failed
            ports[name] = c
        return ports

    def stats(self) -> dict:
        """What --stats gets at exit: the Worker's counters (as `replay --stats`), the ports' and the
        uptime."""
        w = self.worker
        s = w.stats.as_dict(w.ifname)
        s["uptime_s"] = round((time.monotonic_ns() - self.started_ns) / 1e9, 3)
        s["ports"] = self.port_counters()
        if self.n > 1:  # each worker's share of the totals above
            keys = ("rx_packets", "forwarded_packets", "fastpath_packets", "dropped_packets")
            s["workers"] = [{k: wk.stats.as_dict(w.ifname)[k] for k in keys} for wk in self.cpus]
        if self.phases is not None:
            s["phases"] = self.phases.as_dict()
        return s

    def write_stats(self) -> dict:
        s = self.stats()
        if self.opts.stats is not None:
            tmp = Path(f"{self.opts.stats}.tmp")
            tmp.write_text(json.dumps(s, indent=2) + "\n")
            os.replace(tmp, self.opts.stats)
        return s

    def close(self) -> None:
        """Close the control socket and the ports, and give the kernel interfaces back as they were."""
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        for ports in self.wports:
            for port in ports.values():
                port.close()
        if self.n > 1:
            self.worker.close()
        for saved in reversed(self.restore):
            self.kernel.restore_port(saved)
        self.restore = []


def _drain_eventfd(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except BlockingIOError:
        pass


def _drain(sock) -> None:
    try:
        while sock.recv(512):
            pass
    except BlockingIOError:
        pass


def _open_af_packet(link, opts: RunOptions, gso: bool = True, fanout: tuple[int | None, int] | None = None):
    from flowpath.ports.af_packet import AfPacketPort
    from flowpath.ports.kernel_if import kernel_link

    kl = kernel_link(link.name)
    # another MAC than the interface's own (the network file's `address`): take every frame
    promisc = kl is not None and kl.mac != link.address
    return AfPacketPort(link.name, link.ifindex, rx_ring=opts.rx_ring, gso=gso, promisc=promisc,
                        busy_poll=opts.busy_poll, fanout=fanout)  # fmt: skip


def run_gateway(opts: RunOptions, log: Callable[[str], None] = print,
                ready: Callable[[Gateway], None] | None = None, **kw) -> dict:  # fmt: skip
    """`flowpath run`: start, serve until SIGTERM/SIGINT, stop; the final counters. kw: Gateway's."""
    gw = Gateway(opts, log, **kw)
    try:
        if ready is not None:
            ready(gw)
        return gw.run()
    finally:
        gw.close()

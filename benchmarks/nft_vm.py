#!/usr/bin/env python3
"""nft rule evaluation cost: the examples/ gateway's forward chain, compiled VM vs the closures.

Three ways over the same packets (TCP/UDP, new and established, some to port 23, whose `reject` the VM
punts): the VM in a compiled batch loop (what the classic lane does), the Python path's nft_do_chain
through the VM (one dispatch per packet and chain), and the closures per packet (the Python evaluator).
Then the VM coverage of every ruleset under tests/ and examples/ (rules compiled whole / rules).

    python benchmarks/nft_vm.py [--packets N] [--reps N] [--no-coverage]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import raw

from flowpath.config.nft import load_ruleset
from flowpath.errors import ConfigError
from flowpath.netfilter import constants as C
from flowpath.netfilter import nft_vm as V
from flowpath.netfilter.nf_tables import NftPktinfo, NftRuntime, nft_do_chain, nft_do_chain_closures
from flowpath.netfilter.nft_compile import no_fib_views
from flowpath.netfilter.nft_set_hash import UNDO_MAX, UNDO_W, nft_dyn_undo
from flowpath.packet.skb import frame_array, skb_parse

ROOT = Path(__file__).resolve().parent.parent


class _Ct:
    def __init__(self, status: int):
        self.status, self.mark = status, 0


@njit(cache=True, nogil=True)
def vm_batch(progs, chain_id, bufs, pms, outs, verdicts, fv):
    """The lane's shape: one compiled loop, scratch allocated once, counters committed per packet."""
    regs = np.zeros(V.NFT_REG_FILE, np.uint8)
    stack = np.zeros(V.NFT_JUMP_STACK_SIZE, np.int64)
    undo = np.zeros((UNDO_MAX + 1, UNDO_W), np.int64)
    punts = 0
    for i in range(bufs.shape[0]):
        undo[0, 0] = 0
        v = V.nft_vm_run_regs(progs, chain_id, bufs[i], pms[i], outs[i], regs, stack, fv, undo)
        verdicts[i] = v
        if v == V.NFT_PUNT:
            nft_dyn_undo(progs[V.PROG_DYN], undo)
            punts += 1
        else:
            V.nft_vm_commit(progs, outs[i])
    return punts


def _packets(n: int) -> list:
    out = []
    for i in range(n):
        dport = (80, 443, 53, 23, 8080)[i % 5]
        l4 = TCP(sport=1024 + i % 1000, dport=dport, flags="A") if i % 3 else UDP(sport=1024 + i, dport=dport)
        skb = skb_parse(
            frame_array(raw(Ether() / IP(src="192.168.1.10", dst="198.51.100.7") / l4 / (b"x" * 60))), 1
        )
        est = i % 4 != 0
        skb.ct = _Ct(C.IPS_CONFIRMED | C.IPS_ASSURED) if est else _Ct(0)
        skb.ctinfo = C.IP_CT_ESTABLISHED if est else C.IP_CT_NEW
        out.append(skb)
    return out


def _pkt(skb) -> NftPktinfo:
    return NftPktinfo(skb=skb, hooknum=C.NF_INET_FORWARD, nfproto=C.NFPROTO_IPV4, iifname="lan0",
                      oifname="wan0", iif=1, oif=2, mtu=1500)  # fmt: skip


def bench(n: int, reps: int) -> None:
    rt = NftRuntime.from_json(load_ruleset(ROOT / "examples/gateway.nft").to_json(), "gateway.nft")
    rt.vm.set_ifnames({"lan0": 1, "wan0": 2})
    chain = rt.chain("inet", "filter", "forward")
    skbs = _packets(n)
    slot = max(s.len for s in skbs)
    bufs = np.zeros((n, slot), np.uint8)
    pms = np.zeros((n, V.PM_SIZE), np.int64)
    for i, s in enumerate(skbs):
        bufs[i, : s.len] = s.buf
        pms[i, : V.PM_CTSTATE + 1] = (C.NF_INET_FORWARD, C.NFPROTO_IPV4, s.l3proto, s.l4proto, s.nhoff, s.thoff,
                                      s.len - s.nhoff, s.len, 1, 2, 1, 2, 1,
                                      V.nf_ct_state_bit(True, s.ctinfo))  # fmt: skip
        pms[i, V.PM_CTSTATUS], pms[i, V.PM_CTTCPSTATE] = s.ct.status, -1
    outs = np.zeros((n, V.OUT_SIZE), np.int64)
    verdicts = np.zeros(n, np.int64)
    cid = rt.vm.chain_id[id(chain)]
    vm_batch(rt.vm.progs, cid, bufs[:1], pms[:1], outs[:1], verdicts[:1], no_fib_views())  # compile outside the timing
    pkts = [_pkt(s) for s in skbs]
    want = [nft_do_chain_closures(chain, p) for p in pkts]
    punts = vm_batch(rt.vm.progs, cid, bufs, pms.copy(), outs, verdicts, no_fib_views())
    wrong = [i for i, (w, v) in enumerate(zip(want, verdicts, strict=True)) if v != V.NFT_PUNT and w != v]
    if wrong:
        raise SystemExit(f"VM and closures disagree on packets {wrong[:10]}")
    res = {"vm batch (njit loop)": [], "nft_do_chain via VM (per packet)": [], "closures (per packet)": []}
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        vm_batch(rt.vm.progs, cid, bufs, pms.copy(), outs, verdicts, no_fib_views())
        res["vm batch (njit loop)"].append((time.perf_counter_ns() - t0) / n)
        fresh = [_pkt(s) for s in skbs]
        t0 = time.perf_counter_ns()
        for p in fresh:
            nft_do_chain(chain, p)
        res["nft_do_chain via VM (per packet)"].append((time.perf_counter_ns() - t0) / n)
        fresh = [_pkt(s) for s in skbs]
        t0 = time.perf_counter_ns()
        for p in fresh:
            nft_do_chain_closures(chain, p)
        res["closures (per packet)"].append((time.perf_counter_ns() - t0) / n)
    print(
        f"examples/gateway.nft inet filter forward, {n} packets ({punts} punted by the VM: `reject`), best of {reps}"
    )
    best = {k: min(v) for k, v in res.items()}
    for k, ns in best.items():
        print(f"  {k:36s} {ns:9.0f} ns/packet   closures/this = {best['closures (per packet)'] / ns:6.1f}x")


def coverage() -> None:
    print(
        "VM coverage: rules compiled whole / rules (the rest punt where their first unknown statement sits)"
    )
    for p in sorted([*ROOT.glob("tests/**/*.nft"), *ROOT.glob("examples/**/*.nft")]):
        if "invalid" in p.parts:
            continue
        twin = p.with_suffix(".json")
        try:
            obj = twin.read_text() if twin.exists() else load_ruleset(p).to_json()
            stats = NftRuntime.from_json(obj, str(p)).vm_stats()
        except ConfigError as e:
            print(f"  {p.relative_to(ROOT)}: not loaded ({str(e).splitlines()[0][:60]})")
            continue
        print(f"  {str(p.relative_to(ROOT)):48s} {sum(s[2] for s in stats):3d}/{sum(s[1] for s in stats):3d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-coverage", action="store_true")
    a = ap.parse_args(argv)
    bench(a.packets, a.reps)
    if not a.no_coverage:
        coverage()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""flowtable/ingress.py: the early-ingress driver a Worker runs once per poll (nf_hook_ingress: the
flowtable hook runs on its own devices only, as Linux registers it per device), and the shape rules
of the compiled fast path (short signatures; the import rules are tests/test_layers.py's).
"""

from __future__ import annotations

import ast
import os
import pathlib

import numpy as np
import pytest

from flowpath.flowtable import FlowRoute, Flowtable, FlowTuple
from flowpath.flowtable.ingress import EarlyIngress, nf_hook_ingress
from flowpath.packet.counters import Stats
from flowpath.packet.reason import IS_SLOW, Reason

PKG = pathlib.Path(__file__).resolve().parents[2] / "flowpath"
MAX_PARAMS = 12
OTHER_IF = 3  # a device of no flowtable


def _devs(*ifindexes: int) -> np.ndarray:
    d = np.zeros(OTHER_IF + 1, np.bool_)
    d[list(ifindexes)] = True
    return d


def _run(ing: EarlyIngress, b, now_ns: int = 10**9):
    hits: list = []
    counted, groups, torn, nslow = ing.run(b, now_ns, hits)
    # the classic path's packets, in order: every packet whose verdict is a slow one
    assert list(b.slow_idx[:nslow]) == [i for i in range(b.n) if IS_SLOW[b.verdict[i]]]
    return counted, groups, torn, hits


def test_packets_of_other_devices_go_to_the_slow_path_untouched(ftk):
    """nf_hook_ingress: a hit on a device the flowtable is not registered on takes the classic path
    with its bytes (Linux: nf_flow_offload_ip_hook only runs on the flowtable's devices)."""
    ft = Flowtable("ft", capacity=8)
    _, o, _ = ftk.flow(ft)
    b = ftk.batch_of(ftk.pkt(o), ftk.pkt(o), ftk.pkt(o))
    b.iif[1] = OTHER_IF
    before = b.frame_bytes(1)
    st = Stats(OTHER_IF)
    counted, groups, torn, hits = _run(
        EarlyIngress([(ft, _devs(ftk.IIF_C))], OTHER_IF + 1, None, st, True), b
    )
    assert list(b.verdict[:3]) == [Reason.FLOW_FORWARD, Reason.SLOW_NO_ENTRY, Reason.FLOW_FORWARD]
    assert b.frame_bytes(1) == before
    assert (counted, groups, torn) == (2, 1, [])
    assert [list(h) for h in hits] == [[0, 2]]
    assert st.reasons[Reason.FLOW_FORWARD] == 2 and st.ifc[ftk.IIF_C, 0] == 2 and st.ifc[OTHER_IF, 0] == 1


def test_no_flowtable_sends_every_packet_slow_and_counts_the_batch(ftk):
    """`--no-flowtable`: the same driver runs with no flowtable; every packet goes slow, rx counted."""
    b = ftk.batch_of(ftk.pkt(ftk.flow(Flowtable("x"))[1]), ftk.pkt(ftk.flow(Flowtable("y"))[1]))
    st = Stats(OTHER_IF)
    counted, groups, torn, hits = _run(EarlyIngress([], OTHER_IF + 1, None, st, True), b)
    assert list(b.verdict[:2]) == [Reason.SLOW_NO_ENTRY] * 2
    assert (counted, groups, torn, hits) == (0, 0, [], [])
    assert st.ifc[ftk.IIF_C, 0] == 2


def _flow_on(ftk, ft: Flowtable, iif: int, cport: int):
    """A flow whose client side arrives on iif; returns its orig tuple."""
    c, srv = ftk.addr("10.0.0.2"), ftk.addr("198.51.100.7")
    orig, reply = FlowTuple(iif, 4, 17, c, srv, cport, 53), FlowTuple(ftk.IIF_S, 4, 17, srv, c, 53, cport)
    r_orig = FlowRoute(ftk.IIF_S, 1500, ftk.mac(ftk.MAC_GW_OUT), ftk.mac(ftk.MAC_S))
    r_reply = FlowRoute(iif, 1500, ftk.mac(ftk.MAC_GW_IN), ftk.mac(ftk.MAC_C))
    assert ft.flow_offload_add(orig, reply, r_orig, r_reply, 0, "ct", 0) >= 0
    return orig


def test_several_flowtables_each_take_their_own_devices(ftk):
    """With two flowtables, a packet is looked up in the one registered on its device only; the
    second flowtable's packets wait (they do not go slow) while the first one runs."""
    ft1, ft2 = Flowtable("a", capacity=8), Flowtable("b", capacity=8)
    o1, o2 = _flow_on(ftk, ft1, ftk.IIF_C, 1111), _flow_on(ftk, ft2, OTHER_IF, 2222)
    b = ftk.batch_of(ftk.pkt(o1), ftk.pkt(o2), ftk.pkt(o1))
    b.iif[1] = OTHER_IF
    ing = EarlyIngress(
        [(ft1, _devs(ftk.IIF_C)), (ft2, _devs(OTHER_IF))], OTHER_IF + 1, None, Stats(OTHER_IF), True
    )
    counted, groups, torn, hits = _run(ing, b)
    assert list(b.verdict[:3]) == [Reason.FLOW_FORWARD] * 3
    assert [list(h) for h in hits] == [[0, 2], [1]]
    assert (counted, groups, torn) == (3, 2, [])
    assert b.flow[1] == ft2.lookup(o2) and b.flow[0] == ft1.lookup(o1)


def test_a_syn_on_a_closing_flow_is_returned_for_the_conntrack_fixup(ftk):
    """nf_flow_state_check: FIN marks the flow CLOSING, a later SYN tears it down and goes slow; the
    driver hands (flowtable, flow id) back, so that the Worker runs flow_offload_fixup_ct."""
    ft = Flowtable("ft", capacity=8)
    fid, o, _ = ftk.flow(ft, l4=6)
    b = ftk.batch_of(ftk.pkt(o, l4flags="FA"), ftk.pkt(o, l4flags="S"))
    ing = EarlyIngress([(ft, _devs(ftk.IIF_C, ftk.IIF_S))], OTHER_IF + 1, None, Stats(OTHER_IF), True)
    counted, _, torn, _ = _run(ing, b)
    assert b.verdict[1] == Reason.SLOW_TCP_STATE
    assert counted == 1 and torn == [(ft, fid)]


@pytest.mark.skipif(
    os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled signatures without the JIT"
)
def test_the_driver_has_one_compiled_signature(ftk):
    """One and two flowtables, bulk on and off, batches of two capacities: one signature (a second
    one would mean an argument's type drifted; the entry point the driver is called through is
    resolved for its types)."""
    for bulk in (True, False):
        for lanes in (1, 2):
            ft = Flowtable("ft", capacity=8)
            o = _flow_on(ftk, ft, ftk.IIF_C, 1111)
            fts = [(ft, _devs(ftk.IIF_C)), (Flowtable("b"), _devs(OTHER_IF))][:lanes]
            ing = EarlyIngress(fts, OTHER_IF + 1, None, Stats(OTHER_IF), bulk)
            for frames in ([ftk.pkt(o)], [ftk.pkt(o)] * 9):
                _run(ing, ftk.batch_of(*frames))
    assert len(nf_hook_ingress.signatures) == 1, nf_hook_ingress.signatures


def _njit_functions():
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                "njit" in ast.unparse(d) for d in node.decorator_list
            ):
                yield path.relative_to(PKG.parent), node


def test_compiled_functions_take_at_most_twelve_parameters():
    """STYLE.md: batch columns, table views and scratch cross as a few tuples, not one by one."""
    long = [f"{p}:{f.lineno} {f.name} ({len(f.args.args)})" for p, f in _njit_functions()
            if len(f.args.args) > MAX_PARAMS]  # fmt: skip
    assert long == []

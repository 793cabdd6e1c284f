"""run --profile-phases' counters and bench live's per-packet view of them."""

from flowpath.bench.phases import PHASES, PollPhases, format_phases, phase_delta


def test_phase_delta_per_packet_and_other_is_the_rest():
    ph = PollPhases()
    a = ph.as_dict()
    ph.ns.update(rx=1000, hook=2000, xmit=3000, kick=4000, wait=500)
    ph.total_ns = 11_500  # 1000 ns that no phase took: "other"
    ph.packets, ph.polls = 10, 2
    d = phase_delta(a, ph.as_dict())
    assert [d[p] for p in PHASES] == [100, 200, 300, 400, 50, 100]
    assert d["busy_ns_per_packet"] == 1100 and d["packets"] == 10 and d["polls"] == 2
    assert "hook 200" in format_phases(d)


def test_phase_delta_without_packets():
    d = phase_delta(PollPhases().as_dict(), PollPhases().as_dict())
    assert d["hook"] is None and d["busy_ns_per_packet"] is None
    assert format_phases(d) == "phases: no packets"

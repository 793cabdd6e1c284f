"""Where the gateway loop's time goes, per phase of a poll: `flowpath run --profile-phases`.

No Linux counterpart as such (perf's view of napi_poll, the driver's ring read, the stack and
dev_queue_xmit, taken here with reads of the thread's CPU clock, CLOCK_THREAD_CPUTIME_ID, around each
phase: time the thread was preempted counts nowhere, kernel work inside its syscalls counts in the
phase that made them). Counted per poll, never per packet: five clock reads a poll, so the profile
barely moves what it measures.

    rx      port.rx_burst: the receive ring read into the batch (the driver's RX ring walk)
    hook    Worker.poll: flowtable hook, ESP, classic path (ESP's share: the same gateway with and
            without SAs, as `flowpath bench live` measures it)
    xmit    Xmit.poll: frames written into the transmit rings
    kick    the ports' flush: sendto(2) on each transmit ring, in which the kernel sends the frames
            through the veth (tpacket_snd, dev_queue_xmit, veth_xmit, the peer's netif_rx)
    wait    poll(2) when no port had frames (CPU time: close to nothing while it sleeps)
    other   the rest of the loop: timers, the control socket
"""

from __future__ import annotations

PHASES = ("rx", "hook", "xmit", "kick", "wait", "other")


class PollPhases:
    """CPU nanoseconds per phase (thread_time_ns), the packets received in polls that had some, and
    those polls."""

    def __init__(self):
        self.ns = dict.fromkeys(PHASES[:-1], 0)
        self.total_ns = 0  # the whole loop; "other" is the rest
        self.packets = 0
        self.polls = 0

    def as_dict(self) -> dict:
        ns = dict(self.ns)
        ns["other"] = max(0, self.total_ns - sum(ns.values()))
        return {"ns": ns, "packets": self.packets, "polls": self.polls}


def phase_delta(a: dict, b: dict) -> dict:
    """Per-phase ns per packet between two as_dict() snapshots a (earlier) and b: {phase: ns/packet,
    "packets", "polls", "busy_ns_per_packet" (all but wait)}."""
    pk = b["packets"] - a["packets"]
    out = {ph: (b["ns"][ph] - a["ns"][ph]) / pk if pk else None for ph in PHASES}
    out["packets"], out["polls"] = pk, b["polls"] - a["polls"]
    out["busy_ns_per_packet"] = sum(out[ph] for ph in PHASES if ph != "wait") if pk else None
    return out


def format_phases(d: dict) -> str:
    """One line: each phase's ns/packet (a phase_delta over the whole run)."""
    if not d["packets"]:
        return "phases: no packets"
    per = "  ".join(f"{ph} {d[ph]:.0f}" for ph in PHASES)
    return (f"phases (ns/packet over {d['packets']} packets, {d['packets'] / max(1, d['polls']):.1f} a poll): "
            f"{per}; busy {d['busy_ns_per_packet']:.0f}")  # fmt: skip

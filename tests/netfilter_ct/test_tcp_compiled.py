"""The compiled TCP tracker against its naive reference (naive_tcp.py, the Python tracker it replaced).

Linux: nf_conntrack_proto_tcp.c › nf_conntrack_tcp_packet. Random conversations (handshakes, data with
random seq/ack/window/wscale/SACK options, retransmits, out-of-window segments, RST/FIN in any state,
SYN reopening TIME_WAIT, simultaneous open, mid-stream pickup, the flowtable's set_closing, expiry)
go segment by segment through naive_tcp and through tcp_conntrack_packet on a hot row, under random
sysctls (loose, be_liberal, ignore_invalid_rst, max_retrans, timeouts); after every segment the verdict
and every word of the row must be equal. A driver plays nf_conntrack_in and nf_conntrack_confirm
around both: new entries, -NF_REPEAT, confirmation, SEEN_REPLY, removal of killed or expired entries.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import naive_tcp as naive
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowpath.netfilter.conntrack import Conntrack
from flowpath.netfilter.conntrack_proto_tcp import (
    TCP_TIMEOUT_SYSCTLS,
    nf_conntrack_tcp_packet,
    nf_conntrack_tcp_set_closing,
    tcp_checksum_bad,
    tcp_conntrack_can_early_drop,
    tcp_conntrack_established,
    tcp_conntrack_packet,
    tcp_conntrack_set_closing,
    tcp_error,
    tcp_params,
)
from flowpath.netfilter.conntrack_tuple import NfConnTuple
from flowpath.netfilter.constants import (
    IP_CT_DIR_REPLY,
    IP_CT_ESTABLISHED,
    IP_CT_ESTABLISHED_REPLY,
    IP_CT_NEW,
    IPS_CONFIRMED,
    IPS_DYING,
    IPS_FIXED_TIMEOUT,
    IPS_SEEN_REPLY,
    NF_REPEAT,
)
from flowpath.netfilter.ct_layout import (
    CT_BYTES,
    CT_HOT_ROW,
    CT_MARK,
    CT_PACKETS,
    CT_PROTO,
    CT_STATUS,
    CT_TIMEOUT,
    TCP_LAST_ACK,
    TCP_LAST_DIR,
    TCP_LAST_END,
    TCP_LAST_FLAGS,
    TCP_LAST_INDEX,
    TCP_LAST_SEQ,
    TCP_LAST_WIN,
    TCP_LAST_WSCALE,
    TCP_RETRANS,
    TCP_SEEN,
    TCP_SEEN_WORDS,
    TCP_STATE,
)
from flowpath.packet.csum import l4_csum, st16

SEC = 10**9
NHOFF, SLOT = 14, 2048
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
M32 = 0xFFFFFFFF
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT") == "1"
EXAMPLES = 40 if JIT_OFF else 300


# ---- packets ---------------------------------------------------------------------------------------------


def tcp_options(spec, ack: int) -> bytes:
    """TCP option bytes of a spec list (SACK edges relative to ack), padded with EOL to 4n, <= 40."""
    out = b""
    for kind, arg in spec:
        if kind == "mss":
            out += bytes([2, 4, 5, 180])
        elif kind == "ws":
            out += bytes([3, 3, arg])
        elif kind == "sackperm":
            out += bytes([4, 2])
        elif kind == "sack":
            out += bytes([5, 2 + 8 * len(arg)])
            for left, right in arg:
                out += ((ack + left) & M32).to_bytes(4, "big") + ((ack + right) & M32).to_bytes(4, "big")
        elif kind == "ts":
            out += bytes([8, 10]) + bytes(8)
        elif kind == "nop":
            out += b"\x01"
        elif kind == "eol":
            out += b"\x00"
        else:  # raw bytes: silly lengths, partial options
            out += arg
    out = out[:40]
    return out + bytes(-len(out) % 4)


def frame(v6: bool, side: int, flags: int, seq: int, ack: int, win: int, opts: bytes, plen: int,
          doff_bytes: int | None = None) -> np.ndarray:  # fmt: skip
    """An Ethernet frame (IPv4 or IPv6, TCP with a valid checksum) from the client (side 0) or server."""
    ports = (40000, 80) if side == 0 else (80, 40000)
    doff = 20 + len(opts) if doff_bytes is None else doff_bytes
    tcp = (ports[0].to_bytes(2, "big") + ports[1].to_bytes(2, "big") + seq.to_bytes(4, "big")
           + ack.to_bytes(4, "big") + bytes([(doff // 4) << 4, flags]) + win.to_bytes(2, "big")
           + bytes(4) + opts + np.arange(plen, dtype=np.uint8).tobytes())  # fmt: skip
    a, b = (
        (b"\x0a\x00\x00\x02", b"\xc0\xa8\x01\x09")
        if side == 0
        else (b"\xc0\xa8\x01\x09", b"\x0a\x00\x00\x02")
    )
    if v6:
        a, b = b"\x20\x01\x0d\xb8" + bytes(11) + a[3:], b"\x20\x01\x0d\xb8" + bytes(11) + b[3:]
        ip = b"\x60" + bytes(3) + len(tcp).to_bytes(2, "big") + bytes([6, 64]) + a + b
        eth = b"\x02" * 12 + b"\x86\xdd"
    else:
        ip = b"\x45\x00" + (20 + len(tcp)).to_bytes(2, "big") + bytes(4) + bytes([64, 6]) + bytes(2) + a + b
        eth = b"\x02" * 12 + b"\x08\x00"
    buf = np.frombuffer(eth + ip + tcp, np.uint8).copy()
    thoff = NHOFF + len(ip)
    st16(buf, thoff + 16, l4_csum(buf, NHOFF, thoff, len(tcp), v6, 6, 16))
    return buf


def skb_of(buf: np.ndarray, ts_ns: int, ctinfo: int) -> SimpleNamespace:
    """What the trackers read of an skb: buf (ending where the IP packet ends), offsets, time."""
    v6 = buf[12] == 0x86
    return SimpleNamespace(buf=buf, nhoff=NHOFF, thoff=NHOFF + (40 if v6 else 20), l3len=len(buf) - NHOFF,
                           ts_ns=ts_ns, ctinfo=ctinfo, is_ipv6=bool(v6))  # fmt: skip


def slot_of(buf: np.ndarray) -> np.ndarray:
    """The frame in a longer slot with junk after it, as a batch holds it: l3len, not the buffer, ends it."""
    slot = np.full(SLOT, 0xA5, np.uint8)
    slot[: len(buf)] = buf
    return slot


# ---- the reference's entry as a row ------------------------------------------------------------------------


def naive_row(ct) -> np.ndarray:
    """The naive entry's fields at their ct_layout words (written here, not with the module's bridge)."""
    row = np.zeros(CT_HOT_ROW, np.int64)
    row[CT_STATUS], row[CT_TIMEOUT], row[CT_MARK] = ct.status, ct.timeout_ns, ct.mark
    row[CT_PACKETS], row[CT_PACKETS + 1] = ct.packets
    row[CT_BYTES], row[CT_BYTES + 1] = ct.bytes
    tcp = ct.proto
    if tcp is not None:
        p = CT_PROTO
        for word, v in ((TCP_STATE, tcp.state), (TCP_LAST_DIR, tcp.last_dir), (TCP_LAST_INDEX, tcp.last_index),
                        (TCP_LAST_SEQ, tcp.last_seq), (TCP_LAST_ACK, tcp.last_ack), (TCP_LAST_END, tcp.last_end),
                        (TCP_LAST_WIN, tcp.last_win), (TCP_LAST_WSCALE, tcp.last_wscale),
                        (TCP_LAST_FLAGS, tcp.last_flags), (TCP_RETRANS, tcp.retrans)):  # fmt: skip
            row[p + word] = v
        for d, s in enumerate(tcp.seen):
            b = p + TCP_SEEN + TCP_SEEN_WORDS * d
            row[b : b + TCP_SEEN_WORDS] = (
                s.td_end,
                s.td_maxend,
                s.td_maxwin,
                s.td_maxack,
                s.td_scale,
                s.flags,
            )
    return row


class FakeNet:
    """ct.net for the reference and the wrapper: nf_ct_kill marks the entry dying, as Conntrack's does."""

    def __init__(self, params=None):
        self.killed, self.tcp_params = 0, params

    def nf_ct_kill(self, ct) -> bool:
        ct.status |= IPS_DYING
        self.killed += 1
        return True


class KillMarksTable(Conntrack):
    """The wrapper's NfConn lives on a row of a real table, whose nf_ct_kill marks it as FakeNet's does."""

    def __init__(self, params):
        super().__init__(max_entries=4)
        if params is not None:
            self.tcp_params = params

    def nf_ct_kill(self, ct) -> bool:
        ct.status |= IPS_DYING
        return True


# ---- conversations -----------------------------------------------------------------------------------------

KINDS = ("syn", "synack", "ack", "data", "fin", "rst", "rstack", "retrans", "raw", "teardown", "newisn")
DELTAS = st.one_of(st.sampled_from([1, 2, 100, 65535, 65536, 66000, 1 << 20, (1 << 31) - 1, 1 << 31]),
                   st.integers(0, M32))  # fmt: skip
OPTION = st.one_of(
    st.tuples(st.sampled_from(["mss", "sackperm", "ts", "nop", "eol"]), st.none()),
    st.tuples(st.just("ws"), st.integers(0, 20)),
    st.tuples(
        st.just("sack"),
        st.lists(st.tuples(st.integers(-70000, 70000), st.integers(-70000, 2**20)), min_size=1, max_size=4),
    ),  # fmt: skip
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=6)),
)
STEP = st.fixed_dictionaries({
    "side": st.integers(0, 1),
    "kind": st.sampled_from(KINDS + ("ack", "ack", "ack", "data")),  # mostly in-window traffic
    "seq": st.sampled_from(["next"] * 6 + ["back", "fwd", "zero", "random"]),
    "seq_d": DELTAS,
    "ack": st.sampled_from(["next"] * 6 + ["back", "fwd", "zero", "random"]),
    "ack_d": DELTAS,
    "win": st.one_of(st.just(0), st.integers(1, 65535), st.sampled_from([1, 512, 29200, 65535])),
    "opts": st.lists(OPTION, max_size=5),
    "plen": st.one_of(st.just(0), st.integers(1, 1400)),
    "extra": st.sampled_from([0, 0, 0, PSH, ECE | CWR, URG]),
    "raw_flags": st.integers(0, 255),
    "dt": st.one_of(st.just(0), st.integers(0, SEC), st.integers(0, 400 * SEC), st.integers(0, 6 * 86400 * SEC)),
})  # fmt: skip
SYSCTL = st.fixed_dictionaries({
    "nf_conntrack_tcp_loose": st.sampled_from([1, 1, 0]),
    "nf_conntrack_tcp_be_liberal": st.sampled_from([0, 0, 1]),
    "nf_conntrack_tcp_ignore_invalid_rst": st.sampled_from([0, 0, 1]),
    "nf_conntrack_tcp_max_retrans": st.integers(0, 4),
    "timeouts": st.dictionaries(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 12, 13]), st.sampled_from([0, 1, 60, 120, 300, 600]).map(
        lambda s: s * SEC), max_size=4),
})  # fmt: skip


def params_of(sysctl: dict) -> np.ndarray:
    """The same sysctls as the compiled tracker's params, through tcp_params's `sysctl -a` names."""
    names = {int(state): name for name, state in TCP_TIMEOUT_SYSCTLS.items()}
    d = {"net.netfilter." + k: v for k, v in sysctl.items() if k != "timeouts"}
    d.update({"net.netfilter." + names[state]: ns // SEC for state, ns in sysctl["timeouts"].items()})
    return tcp_params(d)


class Conversation:
    """Both ends' sequence space: what each side sends next (snd_nxt) and its ISN."""

    def __init__(self, isn):
        self.isn, self.nxt, self.last = list(isn), list(isn), [None, None]

    def segment(self, step, v6: bool) -> np.ndarray | None:
        side, kind = step["side"], step["kind"]
        if kind == "retrans":
            return self.last[side]
        if kind == "newisn":
            self.isn[side] = self.nxt[side] = (self.isn[side] + step["seq_d"]) & M32
            kind = "syn"
        flags = {"syn": SYN, "synack": SYN | ACK, "ack": ACK, "data": ACK | PSH, "fin": FIN | ACK, "rst": RST,
                 "rstack": RST | ACK, "raw": step["raw_flags"]}[kind] | step["extra"]  # fmt: skip
        base = self.isn[side] if flags & SYN else self.nxt[side]
        seq = {"next": base, "back": base - step["seq_d"], "fwd": base + step["seq_d"], "zero": 0,
               "random": step["seq_d"]}[step["seq"]] & M32  # fmt: skip
        other = self.nxt[1 - side]
        ack = {"next": other, "back": other - step["ack_d"], "fwd": other + step["ack_d"], "zero": 0,
               "random": step["ack_d"]}[step["ack"]] & M32  # fmt: skip
        plen = step["plen"] if kind in ("data", "raw", "fin") else 0
        opts = tcp_options(step["opts"], ack)
        buf = frame(v6, side, flags, seq, ack, step["win"], opts, plen)
        if step["seq"] == "next":
            self.nxt[side] = (seq + plen + bool(flags & SYN) + bool(flags & FIN)) & M32
        self.last[side] = buf
        return buf


class Entry:
    """One connection as both trackers hold it: the reference's ct, the compiled row, the wrapper's NfConn."""

    def __init__(self, orig_side: int, now_ns: int, fixed_timeout: bool, net: FakeNet):
        # resolve_normal_ct: a new entry expires now until its tracker refreshes it; a fixed timeout
        # (ctnetlink's) is never refreshed, so it gets an hour
        status, timeout_ns = (IPS_FIXED_TIMEOUT, now_ns + 3600 * SEC) if fixed_timeout else (0, now_ns)
        self.orig = orig_side
        self.ct = naive.NaiveConn(status=status, timeout_ns=timeout_ns, net=net)
        self.row = np.zeros(CT_HOT_ROW, np.int64)
        self.row[CT_STATUS], self.row[CT_TIMEOUT] = status, timeout_ns
        t = NfConnTuple(2, 6, 1, 2, 3, 4)
        self.nf = KillMarksTable(net.tcp_params).init_conntrack(t, t._replace(src=2, dst=1, sport=4, dport=3), now_ns)
        self.nf.status, self.nf.timeout_ns = status, timeout_ns

    def check(self, where: str) -> None:
        want = naive_row(self.ct)
        assert np.array_equal(self.row, want), (where, self.row - want, want)
        assert np.array_equal(naive_row(self.nf), want), (where, naive_row(self.nf) - want)


def run(steps, isn, sysctl, fixed_timeout: bool = False, v6: bool = False) -> list:
    """Drive both trackers through the steps; the reference's (verdict, state, timeout_ns) per segment."""
    params = params_of(sysctl)
    net = FakeNet(params)
    conv, entry, now, trace = Conversation(isn), None, 0, []
    for i, step in enumerate(steps):
        now += step["dt"]
        if entry is not None and entry.ct.status & IPS_CONFIRMED and entry.ct.timeout_ns - now <= 0:
            entry = None  # nf_conntrack_find_get: expired, gone
        if step["kind"] == "teardown":  # the flowtable's teardown of a closing flow
            if entry is not None:
                naive.nf_conntrack_tcp_set_closing(entry.ct, now, sysctl)
                tcp_conntrack_set_closing(entry.row, now, params)
                nf_conntrack_tcp_set_closing(entry.nf, now)
                entry.check(f"step {i} teardown")
            continue
        buf = conv.segment(step, v6)
        if buf is None:
            continue
        while True:  # nf_conntrack_in's loop: -NF_REPEAT kills the entry and looks up again
            if entry is None:
                entry = Entry(step["side"], now, fixed_timeout, net)
            dir = step["side"] ^ entry.orig
            if dir == IP_CT_DIR_REPLY:
                ctinfo = IP_CT_ESTABLISHED_REPLY
            else:
                ctinfo = IP_CT_ESTABLISHED if entry.ct.status & IPS_SEEN_REPLY else IP_CT_NEW
            skb = skb_of(buf, now, ctinfo)
            want = naive.nf_conntrack_tcp_packet(entry.ct, skb, skb.thoff, dir, False, sysctl)
            got = tcp_conntrack_packet(
                entry.row, slot_of(buf), NHOFF, skb.thoff, skb.l3len, dir, ctinfo, now, params
            )
            wrapped = nf_conntrack_tcp_packet(entry.nf, skb, skb.thoff, dir, False)
            assert got == want == wrapped, (i, step, got, want, wrapped)
            entry.check(f"step {i} {step['kind']} dir {dir} verdict {want}")
            trace.append((want, entry.ct.proto.state if entry.ct.proto else None, entry.ct.timeout_ns - now))
            if want != -NF_REPEAT:
                break
            entry = None
        if entry.ct.status & IPS_DYING:
            entry = None  # killed: a RST answered an unreplied connection
        elif want > 0:
            bits = IPS_CONFIRMED | (IPS_SEEN_REPLY if ctinfo == IP_CT_ESTABLISHED_REPLY else 0)
            entry.ct.status |= bits  # nf_conntrack_confirm, and nf_conntrack_in's SEEN_REPLY
            entry.nf.status |= bits
            entry.row[CT_STATUS] |= bits
            est = naive.nf_conntrack_tcp_established(entry.ct)
            assert tcp_conntrack_established(entry.row) == est
            assert tcp_conntrack_can_early_drop(entry.row) == naive.tcp_can_early_drop(entry.ct)
        elif not entry.ct.status & IPS_CONFIRMED:
            entry = None  # an unconfirmed entry goes with its packet
    return trace


ISN = st.one_of(st.integers(0, M32), st.sampled_from([0, 1, M32, M32 - 1000, (1 << 31) - 1, 1 << 31]))


def _handshake_first(steps):
    """Most conversations start with a three-way handshake, so the later steps meet real states."""
    hs = [{**steps[0], "extra": 0, "kind": k, "side": s, "seq": "next", "ack": "next", "dt": 0, "opts": o}
          for k, s, o in (("syn", 0, [("ws", 7), ("sackperm", None)]), ("synack", 1, [("ws", 3), ("sackperm", None)]),
                          ("ack", 0, []))]  # fmt: skip
    return hs + steps


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=30), isn=st.tuples(ISN, ISN), sysctl=SYSCTL,
       fixed_timeout=st.booleans(), v6=st.booleans(), handshake=st.booleans())  # fmt: skip
def test_compiled_tracker_matches_the_naive_one(steps, isn, sysctl, fixed_timeout, v6, handshake):
    """nf_conntrack_tcp_packet: same verdict and same row words as the reference after every segment."""
    run(_handshake_first(steps) if handshake else steps, isn, sysctl, fixed_timeout, v6)


# ---- scripted conversations: paths random ones seldom find ----------------------------------------------


def seg(side, kind, **kw):
    """One scripted step: in-sequence, window 29200, no options, unless told otherwise."""
    base = {"side": side, "kind": kind, "seq": "next", "seq_d": 0, "ack": "next", "ack_d": 0, "win": 29200,
            "opts": [], "plen": 0, "extra": 0, "raw_flags": 0, "dt": 0}  # fmt: skip
    return {**base, **kw}


HANDSHAKE = [
    seg(0, "syn", opts=[("ws", 7), ("sackperm", None)]),
    seg(1, "synack", opts=[("ws", 2)]),
    seg(0, "ack"),
]
T = naive.TcpConntrack
DEFAULTS = {"nf_conntrack_tcp_max_retrans": 3, "timeouts": {}}


@pytest.mark.parametrize("v6", [False, True])
def test_scripted_resync_after_an_ignored_syn(v6):
    """A SYN on an established connection is ignored; the SYN/ACK answering it proves it right and the
    tracker resyncs to SYN_RECV (nf_conntrack_tcp_packet's TCP_CONNTRACK_IGNORE case)."""
    trace = run([*HANDSHAKE, seg(0, "newisn", seq_d=12345), seg(1, "synack", ack="next"), seg(0, "ack")],
                (1000, M32 - 5), DEFAULTS, v6=v6)  # fmt: skip
    assert [s for _, s, _ in trace[3:]] == [T.ESTABLISHED, T.SYN_RECV, T.ESTABLISHED]


def test_scripted_invalid_fin_then_rst_shortens_the_timeout():
    """nf_tcp_handle_invalid: out-of-window FIN one way, then one the other way: 5 min left, not 5 days."""
    far = seg(0, "fin", seq="fwd", seq_d=1 << 30)
    trace = run([*HANDSHAKE, far, {**far, "side": 1}], (7, 9), DEFAULTS)
    assert [v for v, _, _ in trace[3:]] == [-1, -1]
    assert trace[-1][2] == naive.TCP_TIMEOUTS_NS[T.UNACK]


def test_scripted_time_wait_reopen_and_challenge_ack():
    """A SYN in TIME_WAIT after a FIN close reopens (-NF_REPEAT, then SYN_SENT); a SYN in LAST_ACK is
    ignored and expects an RFC 5961 challenge ACK, which does not move LAST_ACK to TIME_WAIT."""
    close = [seg(0, "fin"), seg(1, "fin"), seg(0, "ack")]
    trace = run([*HANDSHAKE, *close, seg(0, "newisn", seq_d=99999, dt=SEC)], (1, 2), DEFAULTS)
    assert [s for _, s, _ in trace[-3:]] == [T.TIME_WAIT, T.TIME_WAIT, T.SYN_SENT]
    assert trace[-2][0] == -NF_REPEAT
    trace = run([*HANDSHAKE, seg(0, "fin"), seg(1, "fin"), seg(0, "newisn", seq_d=5), seg(1, "ack", ack="back",
                 ack_d=0)], (1, 2), DEFAULTS)  # fmt: skip
    assert [s for _, s, _ in trace[-3:]] == [T.LAST_ACK, T.LAST_ACK, T.LAST_ACK]


def test_scripted_simultaneous_open_and_unreplied_rst():
    """SYN both ways, SYN/ACKs, then ESTABLISHED; a RST answering an unreplied SYN kills the entry."""
    trace = run(
        [seg(0, "syn"), seg(1, "syn"), seg(1, "synack"), seg(0, "synack"), seg(1, "ack")], (1, 2), DEFAULTS
    )
    assert [s for _, s, _ in trace] == [T.SYN_SENT, T.SYN_SENT2, T.SYN_RECV, T.SYN_RECV, T.ESTABLISHED]
    trace = run([seg(0, "syn"), seg(0, "rst", dt=SEC), seg(0, "syn", dt=SEC)], (1, 2), DEFAULTS)
    assert [s for _, s, _ in trace] == [T.SYN_SENT, T.CLOSE, T.SYN_SENT]  # the third on a new entry


def test_scripted_window_update_is_no_retransmission():
    """tcp_in_window: an ACK repeating seq, ack and end with another window is a window update, not a
    retransmission (last_win is part of the comparison); the same ACK twice more is."""
    trace = run([*HANDSHAKE, seg(0, "ack", win=100), seg(0, "ack", win=200), seg(0, "ack", win=200)], (1, 2),
                {**DEFAULTS, "nf_conntrack_tcp_max_retrans": 1})  # fmt: skip
    assert [t for _, _, t in trace[3:]] == [5 * 86400 * SEC, 5 * 86400 * SEC, 300 * SEC]


def test_scripted_pickup_of_a_keepalive():
    """tcp_in_window, mid-stream: picked up on a keepalive (seq one below the next), the peer's ACK of the
    next byte moves the keepalive sender's end by one instead of failing the ACK bound."""
    trace = run([seg(0, "ack", seq="back", seq_d=1), seg(1, "ack"), seg(0, "ack")], (50, 60), DEFAULTS)
    assert [v for v, _, _ in trace] == [1, 1, 1]


def test_scripted_sysctls():
    """loose=0 refuses a mid-stream ACK; be_liberal accepts an out-of-window segment; max_retrans=1 and a
    60 s retrans timeout cap an entry after one repeat; the established timeout is the sysctl's."""
    assert run([seg(0, "ack")], (1, 2), {**DEFAULTS, "nf_conntrack_tcp_loose": 0})[0][0] == -1
    far = seg(0, "data", seq="fwd", seq_d=1 << 30, plen=10)
    assert run([*HANDSHAKE, far], (1, 2), DEFAULTS)[-1][0] == -1
    assert run([*HANDSHAKE, far], (1, 2), {**DEFAULTS, "nf_conntrack_tcp_be_liberal": 1})[-1][0] == 1
    sysctl = {"nf_conntrack_tcp_max_retrans": 1, "timeouts": {T.RETRANS: 60 * SEC, T.ESTABLISHED: 600 * SEC}}
    trace = run([*HANDSHAKE, seg(0, "retrans")], (1, 2), sysctl)
    assert trace[2][2] == 600 * SEC and trace[3][2] == 60 * SEC


# ---- tcp_error, params, signatures ----------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(v6=st.booleans(), flags=st.integers(0, 255), doff=st.integers(0, 15), opts=st.lists(OPTION, max_size=4),
       plen=st.integers(0, 64), cut=st.integers(0, 80), corrupt=st.booleans(), check_csum=st.booleans())  # fmt: skip
def test_tcp_error_matches_the_naive_one(v6, flags, doff, opts, plen, cut, corrupt, check_csum):
    """tcp_error: short header (doff below 20 or past the packet), bad checksum, invalid flags."""
    buf = frame(v6, 0, flags, 1, 2, 3, tcp_options(opts, 2), plen, doff_bytes=4 * doff)
    thoff = NHOFF + (40 if v6 else 20)
    buf = buf[: max(len(buf) - cut, thoff + 20)].copy()  # skb_parse guarantees 20 bytes of header
    if corrupt:
        buf[-1] ^= 0x5A
    want = naive.tcp_error(skb_of(buf, 0, 0), thoff, check_csum)
    slot, l3len = slot_of(buf), len(buf) - NHOFF
    assert (
        tcp_error(slot, NHOFF, thoff, l3len) or check_csum and tcp_checksum_bad(slot, NHOFF, thoff, l3len)
    ) == want


def test_tcp_error_never_reads_past_the_packet():
    """A header cut short, a transport offset past the end or an IP length past the buffer is INVALID
    (the compiled path has no skb_parse in front of it)."""
    buf = frame(False, 0, ACK, 1, 2, 3, b"", 0)
    slot = slot_of(buf)
    assert not tcp_error(slot, NHOFF, NHOFF + 20, 40) and not tcp_checksum_bad(slot, NHOFF, NHOFF + 20, 40)
    assert tcp_error(slot, NHOFF, NHOFF + 20, 39)  # 19 bytes of TCP header
    assert tcp_error(slot, NHOFF, -1, 40)
    assert tcp_error(slot, NHOFF, NHOFF + 20, SLOT)  # ends past the slot
    assert not tcp_checksum_bad(slot, NHOFF, NHOFF + 20, SLOT)  # left to tcp_error
    row = np.zeros(CT_HOT_ROW, np.int64)
    assert tcp_conntrack_packet(row, slot, NHOFF, NHOFF + 20, 39, 0, IP_CT_NEW, 0, tcp_params()) == -1
    assert not row.any()


def test_tcp_params_follow_the_sysctls():
    """struct nf_tcp_net: Linux's defaults; a Net's (or a dict's) net.netfilter.* values override them."""
    from flowpath.netfilter.ct_layout import TCP_P_BE_LIBERAL, TCP_P_LOOSE, TCP_P_MAX_RETRANS, TCP_P_TIMEOUTS

    T = naive.TcpConntrack
    p = tcp_params()
    assert p[TCP_P_LOOSE] == 1 and p[TCP_P_BE_LIBERAL] == 0 and p[TCP_P_MAX_RETRANS] == 3
    assert p[TCP_P_TIMEOUTS + T.ESTABLISHED] == 432000 * SEC and p[TCP_P_TIMEOUTS + T.UNACK] == 300 * SEC
    net = SimpleNamespace(sysctl={"net.netfilter.nf_conntrack_tcp_be_liberal": 1,
                                  "net.netfilter.nf_conntrack_tcp_timeout_established": 3600})  # fmt: skip
    p = tcp_params(net)
    assert p[TCP_P_BE_LIBERAL] == 1 and p[TCP_P_TIMEOUTS + T.ESTABLISHED] == 3600 * SEC
    assert p.dtype == np.int64 and p.flags.c_contiguous


@pytest.mark.skipif(JIT_OFF, reason="no compiled signatures without the JIT")
def test_each_kernel_has_one_compiled_signature():
    """The Python path (a real skb through Conntrack) and a batch slot give the kernels the same types."""
    from ct_helpers import skb_of as parse
    from scapy.all import IP, TCP

    from flowpath.netfilter.conntrack import Conntrack
    from flowpath.netfilter.constants import NF_INET_PRE_ROUTING

    run([*HANDSHAKE, seg(0, "data", plen=10), seg(0, "teardown")], (1, 2), DEFAULTS)
    table = Conntrack()
    for pkt in (IP(src="10.0.0.2", dst="10.0.0.9") / TCP(flags="S"), IP(src="10.0.0.9", dst="10.0.0.2") / TCP(
            sport=80, dport=20, flags="SA", ack=1)):  # fmt: skip
        skb = parse(pkt)
        table.nf_conntrack_in(skb, NF_INET_PRE_ROUTING)
        table.nf_conntrack_confirm(skb)
    for kernel in (tcp_conntrack_packet, tcp_error, tcp_checksum_bad, tcp_conntrack_set_closing):
        assert len(kernel.signatures) == 1, (kernel, kernel.signatures)

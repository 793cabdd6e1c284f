"""The steering program (ports/fanout.py) against packet/steer.py's flow_hash_frame, in a classic BPF
interpreter (tests/ports/steer_frames.py) fed what the kernel shows a fanout program; test_fanout_live.py
runs it in the kernel.

Linux: net/packet/af_packet.c › fanout_demux_bpf; net/core/filter.c › bpf_check_classic.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.packet.steer import flow_hash_frame
from flowpath.ports.fanout import (
    BPF_JMP,
    BPF_MEMWORDS,
    BPF_RET,
    BPF_ST,
    Asm,
    sock_filter_bytes,
    steer_program,
)

sys.path.insert(0, os.path.dirname(__file__))
from steer_frames import TAGS, kernel_view, run_cbpf, steer_frames  # noqa: E402

FRAMES = steer_frames()


def steer_cpu(frame: bytes, nr_cpus: int) -> int:
    """The reference: flow_hash_frame % nr_cpus, CPU 0 for non-IP and cut-short headers."""
    h = flow_hash_frame(np.frombuffer(frame, np.uint8), 0, len(frame))
    return 0 if h < 0 else int(h) % nr_cpus


@pytest.mark.parametrize("nr_cpus", [1, 2, 3, 4, 7, 256])
def test_program_computes_flow_hash_frame_mod_n_on_every_kind(nr_cpus):
    """Every frame kind (flows both ways, fragments, options, echo, ESP, tags, ARP, extension
    headers, cut-short headers): the program returns flow_hash_frame(frame) % N."""
    prog = steer_program(nr_cpus)
    got = [run_cbpf(prog, *kernel_view(f)) for f in FRAMES]
    assert got == [steer_cpu(f, nr_cpus) for f in FRAMES]


def test_frames_spread_over_all_cpus():
    """Not all on CPU 0: the comparison above would then prove little."""
    prog = steer_program(4)
    cpus = {run_cbpf(prog, *kernel_view(f)) for f in FRAMES}
    assert cpus == {0, 1, 2, 3}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FRAMES), st.integers(0, 80), st.binary(min_size=1, max_size=6), st.integers(15, 200),
       st.integers(1, 9))  # fmt: skip
def test_program_matches_on_mutated_frames(frame, at, junk, cut, nr_cpus):
    """Bytes overwritten anywhere in the first headers (ihl, frag_off, protocols, ICMP types, tags)
    and frames cut anywhere: still flow_hash_frame % N."""
    f = bytearray(frame)
    f[14 + at : 14 + at + len(junk)] = junk[: max(0, len(f) - 14 - at)]
    f = bytes(f[: max(cut, 20 if int.from_bytes(f[12:14], "big") in TAGS else 15)])
    assert run_cbpf(steer_program(nr_cpus), *kernel_view(f)) == steer_cpu(f, nr_cpus)


def test_program_reads_only_scratch_words_written_on_every_path():
    """bpf_check_classic › check_load_and_stores refuses a program that may read M[i] before any
    write on some path; the kernel test would fail at setsockopt, this says which word."""
    prog = steer_program(3)
    valid = [None] * len(prog)  # bit i: M[i] written on every path to the instruction
    valid[0] = 0
    for pc, (code, jt, jf, k) in enumerate(prog):
        mask = valid[pc]
        assert mask is not None, f"instruction {pc} is unreachable"
        if code & 0xE7 in (0x60, 0x61):  # ld / ldx M[k]
            assert mask >> k & 1, f"M[{k}] read at {pc} before it is written on every path"
        if code & 7 in (BPF_ST, BPF_ST + 1):
            assert k < BPF_MEMWORDS
            mask |= 1 << k
        if code & 7 == BPF_RET:
            continue
        targets = (
            [pc + 1 + k]
            if code == BPF_JMP
            else [pc + 1 + jt, pc + 1 + jf]
            if code & 7 == BPF_JMP
            else [pc + 1]
        )
        for t in targets:
            valid[t] = mask if valid[t] is None else valid[t] & mask


def test_program_bytes_are_sock_filters():
    """struct sock_filter is 8 bytes: code, jt, jf, k (native order)."""
    prog = steer_program(2)
    raw = sock_filter_bytes(prog)
    assert len(raw) == 8 * len(prog) and raw[:2] == prog[0][0].to_bytes(2, sys.byteorder)


@pytest.mark.parametrize("nr_cpus", [0, -1, 257])
def test_nr_cpus_out_of_range_is_refused(nr_cpus):
    with pytest.raises(ValueError, match="1..256"):
        steer_program(nr_cpus)


def test_assembler_refuses_bad_jumps():
    """Classic jumps go forward by at most 255 (jt/jf are u8); labels must exist and be unique."""
    a = Asm()
    a.label("back")
    a.ld_len()
    a.jeq(0, "back")
    a.ret(0)
    with pytest.raises(ValueError, match="forward"):
        a.assemble()
    a = Asm()
    a.jeq(0, "far")
    for _ in range(256):
        a.ld_len()
    a.label("far")
    a.ret(0)
    with pytest.raises(ValueError, match="forward"):
        a.assemble()
    a = Asm()
    a.ja("nowhere")
    a.ret(0)
    with pytest.raises(ValueError, match="undefined"):
        a.assemble()
    with pytest.raises(ValueError, match="twice"):
        a.label("x")
        a.label("x")
    a = Asm()
    a.ld_len()
    with pytest.raises(ValueError, match="return"):
        a.assemble()

"""What long commands say on stderr: one line when numba compiles (never when it loads from the
cache), and a progress bar with packet counts when stderr is a terminal (nothing on a pipe)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from numba import njit

import flowpath.replay
from flowpath import cli
from flowpath.cli import Environment, main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = EXAMPLES / "profiles" / "gateway-udp.toml"
NET, RULES = str(EXAMPLES / "gateway.ip"), str(EXAMPLES / "gateway.nft")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _replay_compiling(monkeypatch, kernel):
    """`flowpath replay` whose work is a call of `kernel` (compiled on its first call)."""

    def fake(opts, meter):
        kernel(np.zeros(3, np.int64))
        return flowpath.replay.ReplayResult({})

    monkeypatch.setattr(flowpath.replay, "run_replay", fake)
    return ["replay", "-n", NET, "-r", RULES, "--in", f"lan0={EXAMPLES / 'lan.pcap'}", "--out-dir", "x", "-q"]


def test_a_compile_is_announced_once_and_a_loaded_kernel_not_at_all(monkeypatch):
    @njit
    def two_kernels(a):  # compiled here: numba's cache-miss event, for it and for its callee
        return inner(a) + 1

    @njit
    def inner(a):
        return a.sum()

    monkeypatch.setattr(cli.numba_cache, "has_kernels", lambda: False)
    args = _replay_compiling(monkeypatch, two_kernels)
    env = Environment(io.StringIO(), io.StringIO())
    assert main(args, env) == 0
    assert env.stderr.getvalue() == cli.COMPILE_COLD + "\n"
    assert "first run after install or upgrade" in cli.COMPILE_COLD
    env = Environment(io.StringIO(), io.StringIO())
    assert main(args, env) == 0  # compiled now: nothing to say
    assert env.stderr.getvalue() == ""


def test_a_compile_beside_cached_kernels_says_so(monkeypatch):
    @njit
    def fresh(a):
        return a.sum()

    monkeypatch.setattr(cli.numba_cache, "has_kernels", lambda: True)
    env = Environment(io.StringIO(), io.StringIO())
    assert main(_replay_compiling(monkeypatch, fresh), env) == 0
    assert env.stderr.getvalue() == cli.COMPILE_MORE + "\n"


def test_the_compile_listener_ends_with_the_command(monkeypatch):
    from numba.core import event

    monkeypatch.setattr(cli.numba_cache, "has_kernels", lambda: True)
    before = len(event._registered.get("numba:compile", []))
    assert (
        main(
            _replay_compiling(monkeypatch, njit(lambda a: a.sum())), Environment(io.StringIO(), io.StringIO())
        )
        == 0
    )
    assert len(event._registered.get("numba:compile", [])) == before and not cli._undo


def _chain(tmp_path, env_for):
    gen, out = tmp_path / "gen.pcap", tmp_path / "out"
    envs = [env_for() for _ in range(3)]
    assert main(["trafgen", str(PROFILE), "--out", str(gen), "-q"], envs[0]) == 0
    assert (
        main(["replay", "-n", NET, "-r", RULES, "--in", f"lan0={gen}", "--out-dir", str(out), "-q"], envs[1])
        == 0
    )
    assert main(["rxstats", str(out / "wan0.pcap"), "--tx", str(gen), "-q"], envs[2]) == 0
    # a cold cache (any edit of the sources) adds the compile line: that one is wanted on a pipe too
    return [
        e.stderr.getvalue().replace(cli.COMPILE_COLD + "\n", "").replace(cli.COMPILE_MORE + "\n", "")
        for e in envs
    ]


def test_no_progress_on_a_pipe(tmp_path):
    assert _chain(tmp_path, lambda: Environment(io.StringIO(), io.StringIO())) == ["", "", ""]


def test_progress_bars_with_packet_counts_on_a_terminal(tmp_path):
    trafgen, replay, rxstats = _chain(tmp_path, lambda: Environment(io.StringIO(), Terminal()))
    assert "generating" in trafgen and "writing" in trafgen and "4,960 packets" in trafgen
    assert "replay" in replay and "4,960 packets" in replay and "100%" in replay
    assert "reading --tx" in rxstats and "rxstats" in rxstats and "5,040 packets" in rxstats
    assert "━" in replay  # the bar itself

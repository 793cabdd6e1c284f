"""`flowpath.cli.main` in-process: the one error handler, `--traceback` anywhere on the line, output
paths checked before any work, and whole lines when stdout is a pipe (not cut at 80 columns)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from flowpath.cli import Environment, main
from flowpath.errors import ConfigError, UsageError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NET, RULES = str(EXAMPLES / "gateway.ip"), str(EXAMPLES / "gateway.nft")
REPLAY = ["replay", "-n", NET, "-r", RULES, "--in", f"lan0={EXAMPLES / 'lan.pcap'}",
          "--in", f"wan0={EXAMPLES / 'wan.pcap'}"]  # fmt: skip


def _env() -> Environment:
    return Environment(stdout=io.StringIO(), stderr=io.StringIO())


def _bad_net(tmp_path: Path) -> str:
    bad = tmp_path / "bad.ip"
    bad.write_text("link add lan0\naddr add 10.0.0.1/33 dev lan0\n")
    return str(bad)


def test_config_error_exits_2_with_file_line_col(tmp_path):
    env = _env()
    rc = main(["replay", "-n", _bad_net(tmp_path), "--in", f"lan0={EXAMPLES / 'lan.pcap'}",
               "--out-dir", str(tmp_path / "o")], env)  # fmt: skip
    assert rc == 2
    assert env.stderr.getvalue().startswith(f"{tmp_path / 'bad.ip'}:2:") and "Error:" in env.stderr.getvalue()


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_traceback_reraises_before_or_after_the_command(tmp_path, where):
    """httpie's --traceback: the exception itself instead of an exit code, wherever the flag stands."""
    args = ["replay", "-n", _bad_net(tmp_path), "--in", f"lan0={EXAMPLES / 'lan.pcap'}",
            "--out-dir", str(tmp_path / "o")]  # fmt: skip
    args = ["--traceback", *args] if where == "before the command" else [*args, "--traceback"]
    with pytest.raises(ConfigError, match="/33"):
        main(args, _env())


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_traceback_reraises_usage_errors_too(where):
    args = ["bench", "nope"]
    args = ["--traceback", *args] if where == "before the command" else [*args, "--traceback"]
    with pytest.raises(UsageError, match="unknown scenario"):
        main(args, _env())


def test_a_runtime_failure_exits_1_and_suggests_traceback(tmp_path, monkeypatch):
    import flowpath.replay

    def boom(*a, **kw):
        raise ValueError("boom")

    monkeypatch.setattr(flowpath.replay, "replay", boom)
    env = _env()
    assert main([*REPLAY, "--out-dir", str(tmp_path), "-q"], env) == 1
    assert env.stderr.getvalue() == "flowpath: error: ValueError: boom (run with --traceback for details)\n"


def test_replay_summary_on_a_pipe_keeps_each_line_whole(tmp_path, capsys):
    """rich cuts a non-terminal's lines at 80 columns: `flows offloaded` and its number would part."""
    assert main([*REPLAY, "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("rx 358  tx 357") and first.endswith("flows offloaded 10")
    assert f"{tmp_path / 'wan0.pcap'}" in out


def test_replay_writes_to_the_injected_environment(tmp_path, capsys):
    env = _env()
    assert main([*REPLAY, "--out-dir", str(tmp_path)], env) == 0
    assert env.stdout.getvalue().startswith("rx 358  tx 357")
    assert capsys.readouterr().out == ""


def test_bench_table_on_a_pipe_is_not_cut(monkeypatch):
    """Eight columns and a caption are wider than 80: on a pipe every number stays whole (no `12,288…`)."""
    import flowpath.bench.flowtable as ft

    def fake(frame_size, flows, **kw):
        return {"flows": flows, "frame_size": frame_size, "batch_size": kw["batch_size"], "classic_mpps": 3.0241,
                "python_classic_mpps": 0.0241, "flowtable_mpps": 29.21, "flowtable_mpps_cold": 25.7,
                "kernel_mpps": 32.5, "ratio": 9.66, "flowtable_gbps_l2": 14.95, "bytes_per_flow": 394.0,
                "linux_ratio": 2.75}  # fmt: skip

    monkeypatch.setattr(ft, "classic_vs_flowtable", fake)
    env = _env()
    assert main(["bench", "classic-vs-flowtable", "--quick", "--flows", "12288,100000"], env) == 0
    out = env.stdout.getvalue()
    assert "…" not in out and "12,288" in out and "100,000" in out and "9.66x" in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_unwritable_stats_fails_before_forwarding(tmp_path, monkeypatch):
    import flowpath.replay

    monkeypatch.setattr(flowpath.replay, "replay", lambda *a, **kw: pytest.fail("forwarded anyway"))
    env = _env()
    stats = tmp_path / "missing" / "s.json"
    assert main([*REPLAY, "--out-dir", str(tmp_path / "o"), "--stats", str(stats)], env) == 2
    want = f"flowpath: error: --stats: cannot write {stats}: No such file or directory\n"
    assert env.stderr.getvalue() == want


@pytest.mark.parametrize("option", ["--out-dir", "--stats", "--dump-conntrack", "--dump-flowtable"])
def test_every_replay_output_is_checked_first(tmp_path, monkeypatch, option):
    import flowpath.replay

    monkeypatch.setattr(flowpath.replay, "replay", lambda *a, **kw: pytest.fail("forwarded anyway"))
    afile = tmp_path / "afile"
    afile.write_text("")
    target = afile / "x"  # below a regular file: not even root can write there
    args = [*REPLAY, option, str(target)] + ([] if option == "--out-dir" else ["--out-dir", str(tmp_path)])
    env = _env()
    assert main(args, env) == 2
    err = env.stderr.getvalue()
    assert err.count("\n") == 1 and f"{option}: cannot write {target}: Not a directory" in err


def test_out_file_that_is_a_directory_is_a_usage_error(tmp_path):
    env = _env()
    assert main([*REPLAY, "--out", f"wan0={tmp_path}"], env) == 2
    assert f"--out wan0: cannot write {tmp_path}: Is a directory" in env.stderr.getvalue()


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_bench_output_fails_before_measuring(tmp_path, monkeypatch, option):
    import flowpath.bench.bulking as bulking

    monkeypatch.setattr(bulking, "bulking", lambda *a, **kw: pytest.fail("measured anyway"))
    target = tmp_path / "no-such-dir" / "r.out"
    env = _env()
    assert main(["bench", "bulking", "--quick", option, str(target)], env) == 2
    want = f"flowpath: error: {option}: cannot write {target}: No such file or directory\n"
    assert env.stderr.getvalue() == want


def test_rxstats_and_trafgen_check_their_outputs(tmp_path):
    env = _env()
    bad = tmp_path / "nodir" / "x"
    assert main(["rxstats", str(EXAMPLES / "lan.pcap"), "--json", str(bad)], env) == 2
    assert main(["trafgen", str(EXAMPLES / "profiles" / "gateway-udp.toml"), "--out", str(bad)], env) == 2
    assert env.stderr.getvalue().count("cannot write") == 2


def test_python_dash_m_flowpath_runs_this_tree():
    r = subprocess.run([sys.executable, "-m", "flowpath", "nft", "-c", "-f", RULES], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_a_flowtable_device_missing_from_the_network_file_is_located(tmp_path):
    """The ruleset names a device the network file lacks: file:line:col at the device, exit 2."""
    rules = tmp_path / "r.nft"
    rules.write_text(Path(RULES).read_text().replace("devices = { lan0, wan0 }", "devices = { lan0, wan9 }"))
    env = _env()
    rc = main(["replay", "-n", NET, "-r", str(rules), "--in", f"lan0={EXAMPLES / 'lan.pcap'}",
               "--out-dir", str(tmp_path / "o"), "-q"], env)  # fmt: skip
    err = env.stderr.getvalue()
    line = next(k for k, t in enumerate(rules.read_text().splitlines(), 1) if "wan9" in t)
    assert rc == 2 and err.startswith(f"{rules}:{line}:") and "device wan9 is not in the network file" in err
    assert not (tmp_path / "o" / "lan0.pcap").exists()


def test_a_capture_broken_in_the_middle_still_writes_outputs_and_stats(tmp_path):
    """The packets before the break are forwarded, their counters written, and the error says so."""
    from flowpath.ports.pcap import read_capture

    lan = (EXAMPLES / "lan.pcap").read_bytes()
    whole = sum(1 for _ in read_capture(EXAMPLES / "lan.pcap"))
    broken = tmp_path / "broken.pcap"
    broken.write_bytes(lan[: len(lan) // 2] + b"\x01\x02\x03")  # a record cut short
    stats, env = tmp_path / "s.json", _env()
    rc = main(["replay", "-n", NET, "-r", RULES, "--in", f"lan0={broken}", "--out-dir", str(tmp_path / "o"),
               "--stats", str(stats), "-q"], env)  # fmt: skip
    err = env.stderr.getvalue()
    assert rc == 1 and str(broken) in err and "replay stopped there" in err and str(stats) in err
    s = __import__("json").loads(stats.read_text())
    assert 0 < s["rx_packets"] < whole and f"the {s['rx_packets']} packets read before it" in err
    assert (tmp_path / "o" / "wan0.pcap").stat().st_size > 24

"""`flowpath.cli.main` in-process: the one error handler, `--traceback` anywhere on the line."""

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


def test_replay_writes_to_the_injected_environment(tmp_path, capsys):
    env = _env()
    assert main([*REPLAY, "--out-dir", str(tmp_path)], env) == 0
    assert env.stdout.getvalue().startswith("rx 358  tx 357")
    assert capsys.readouterr().out == ""


def test_python_dash_m_flowpath_runs_this_tree():
    r = subprocess.run([sys.executable, "-m", "flowpath", "nft", "-c", "-f", RULES], capture_output=True,
                       text=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""

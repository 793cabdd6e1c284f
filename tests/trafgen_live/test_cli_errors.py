"""`trafgen --live` / `rxstats --live` on bad input: a clear message and exit 2, no traceback, before
any socket is opened (so these run without root)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from flowpath.cli import Environment, main

PROFILE = "[[stream]]\nsize = 128\ncount = 10\nrate = {pps = 1000}\n"


def _run(args: list[str]) -> tuple[int, str]:
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    return main(args, env), env.stderr.getvalue()


@pytest.fixture
def profile(tmp_path: Path) -> str:
    p = tmp_path / "p.toml"
    p.write_text(PROFILE)
    return str(p)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["trafgen", "{profile}", "--live", "fpnosuchif0"], "no interface 'fpnosuchif0'"),
        (["trafgen", "/nonexistent/p.toml", "--live", "lo"], "no such profile"),
        (["trafgen", "{profile}"], "one of --out FILE.pcap and --live IF"),
        (["trafgen", "{profile}", "--live", "lo", "--rate", "fast"], "only `max`"),
        (["trafgen", "{profile}", "--live", "lo", "--duration", "0"], "--duration must be positive"),
        (["trafgen", "{profile}", "--out", "x.pcap", "--rate", "max"], "go with --live"),
        (["rxstats", "--live", "fpnosuchif0", "--duration", "1"], "no interface 'fpnosuchif0'"),
        (["rxstats", "--live", "lo"], "--live needs --duration"),
        (["rxstats", "--live", "lo", "--duration", "1", "--profile", "/nonexistent/p.toml"], "no such file"),
        (["rxstats"], "give captures, or --live"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(profile, args, msg):
    rc, err = _run([a.replace("{profile}", profile) for a in args])
    assert rc == 2
    assert msg in err
    assert "Traceback" not in err

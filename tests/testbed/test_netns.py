"""flowpath.testbed: the namespaces bench itself (the live tests and benchmarks stand on it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from flowpath.testbed.gateway import RULESET, without_flowtable
from flowpath.testbed.netns import Testbed, require_netns


def test_without_flowtable_blanks_the_flowtable_and_flow_add_keeping_line_numbers():
    """nft's errors on the kernel's copy must still point into the original file."""
    out = without_flowtable(RULESET)
    src, got = RULESET.splitlines(), out.splitlines()
    assert len(got) == len(src)
    assert "flowtable" not in out and "flow add" not in out
    kept = [(a, b) for a, b in zip(src, got, strict=True) if b]
    assert all(a == b for a, b in kept)
    assert sum(1 for ln in src if ln.strip()) - len(kept) == 6  # the 5-line block and the flow add rule


@pytest.mark.root
def test_testbed_joins_namespaces_and_teardown_ends_processes_and_namespaces():
    """Two namespaces reach each other over a veth; close() (here: an exception leaving the with)
    ends a process started inside and deletes both namespaces."""
    reason = require_netns()
    if reason:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="leave"):
        with Testbed("fpt-selftest") as tb:
            a, b = tb.add_netns("a"), tb.add_netns("b")
            tb.veth(a, "eth0", b, "eth0", mtu=1400)
            a.ip("addr", "add", "198.18.9.1/24", "dev", "eth0")
            b.ip("addr", "add", "198.18.9.2/24", "dev", "eth0")
            assert a.run("ping", "-c", "1", "-w", "3", "198.18.9.2", check=False).returncode == 0
            assert b.link("eth0")["mtu"] == 1400
            proc = b.popen("sleep", "60")
            names = [ns.name for ns in (a, b)]
            raise RuntimeError("leave")
    assert proc.poll() is not None
    assert not any(Path("/run/netns", n).exists() for n in names)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)

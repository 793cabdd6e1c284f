"""The two-gateway IPsec example (examples/ipsec/), run as README.md gives it: trafgen -> replay
through west -> west's wan0 through east -> rxstats on east's lan0, in-process; Scapy's ESP
(RFC 4303, RFC 4106) is the independent check of what crosses the tunnel. And the warning for a
network file whose xfrm keys other users can read."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, rdpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.cli import Environment, main
from flowpath.config.ipbatch import load_network
from flowpath.errors import ConfigWarning

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ipsec"


def readme_chain() -> list[list[str]]:
    """The `flowpath` lines of README's ```sh block that uses examples/ipsec/, as argument lists."""
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
                if "examples/ipsec/" in b]  # fmt: skip
    words = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [w[1:] for w in words if w[:1] == ["flowpath"]]


def sa_key(path: Path, spi: int) -> bytes:
    """The aead key (with its salt) of the `xfrm state` line for `spi` in a network file."""
    for line in path.read_text().splitlines():
        if line.startswith("xfrm state") and f"spi {spi:#x} " in line:
            return bytes.fromhex(re.search(r"'rfc4106\(gcm\(aes\)\)' 0x([0-9a-f]+) 128", line)[1])
    raise KeyError(spi)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run the README chain in a scratch directory that sees the repository's examples/."""
    work = tmp_path_factory.mktemp("ipsec-example")
    (work / "examples").symlink_to(REPO / "examples")
    cwd = Path.cwd()
    outputs = []
    try:
        os.chdir(work)
        for args in readme_chain():
            env = Environment(io.StringIO(), io.StringIO())
            assert main(args, env) == 0, (args, env.stderr.getvalue())
            outputs.append(env.stdout.getvalue())
    finally:
        os.chdir(cwd)
    return work, outputs


def test_readme_chain_is_trafgen_west_east_rxstats():
    cmds = [a[0] for a in readme_chain()]
    assert cmds == ["trafgen", "replay", "replay", "rxstats"]
    assert "chmod 600 examples/ipsec/west.ip examples/ipsec/east.ip" in (REPO / "README.md").read_text()


def test_east_delivers_every_stream_without_loss(chain):
    work, outputs = chain
    rx = json.loads((work / "sites-rx.json").read_text())
    streams = {s["name"]: s for s in rx["streams"].values()}
    assert set(streams) == {"sunset-to-sunrise", "sunset-mixed-sizes"}
    for s in streams.values():
        assert s["packets"] == s["expected"] > 0
        assert (s["lost"], s["duplicates"], s["reordered"]) == (0, 0, 0)
    assert streams["sunset-to-sunrise"]["expected"] == 20000
    table = outputs[-1]
    assert "sunset-to-sunrise" in table and "sunset-mixed-sizes" in table and "0 (0.00%)" in table


def test_west_sends_esp_that_scapy_decrypts_with_easts_key(chain):
    work, _ = chain
    sent = rdpcap(str(work / "sites-gen.pcap"), count=1)[0]
    first = rdpcap(str(work / "west-out" / "wan0.pcap"), count=1)[0]
    assert first[Ether].dst == "02:00:00:00:02:02"  # east's wan0
    assert (first[IP].src, first[IP].dst, first[IP].proto) == ("192.0.2.1", "192.0.2.2", 50)
    assert bytes(sent[UDP].payload) not in bytes(first)
    east = SecurityAssociation(ESP, spi=0x1001, crypt_algo="AES-GCM", crypt_key=sa_key(EXAMPLE / "east.ip", 0x1001),
                               auth_algo="NULL", tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))  # fmt: skip
    inner = east.decrypt(first[IP])
    assert (inner[IP].src, inner[IP].dst, inner[IP].ttl) == ("10.1.0.5", "10.2.0.7", sent[IP].ttl - 1)
    assert bytes(inner[UDP].payload) == bytes(sent[UDP].payload)
    delivered = rdpcap(str(work / "east-out" / "lan0.pcap"), count=1)[0]
    assert delivered[Ether].dst == "02:00:00:00:03:07" and delivered[IP].ttl == sent[IP].ttl - 2
    assert bytes(delivered[IP].payload) == bytes(inner[IP].payload)


def test_both_gateways_hold_the_same_sas():
    for spi in (0x1001, 0x2002):
        assert sa_key(EXAMPLE / "west.ip", spi) == sa_key(EXAMPLE / "east.ip", spi)
    assert sa_key(EXAMPLE / "west.ip", 0x1001) != sa_key(EXAMPLE / "west.ip", 0x2002)


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o640, False), (0o600, False)])
def test_a_key_file_others_can_read_is_warned_about(tmp_path, mode, warned):
    net = tmp_path / "west.ip"
    shutil.copy(EXAMPLE / "west.ip", net)
    net.chmod(mode)
    with pytest.warns(ConfigWarning) if warned else _no_warning():
        load_network(net)
    env = Environment(io.StringIO(), io.StringIO())
    assert main(["replay", "-n", str(net), "--in", f"lan0={REPO / 'examples' / 'lan.pcap'}", "--out-dir",
                 str(tmp_path / "o"), "-q"], env) == 0  # fmt: skip
    want = (
        f"{net}: Warning: it holds xfrm keys and other users can read it (mode {mode:04o}); chmod 600 {net}"
    )
    assert (want in env.stderr.getvalue()) == warned


def test_a_network_file_without_keys_is_not_warned_about(tmp_path):
    net = tmp_path / "gw.ip"
    shutil.copy(REPO / "examples" / "gateway.ip", net)
    net.chmod(0o644)
    with _no_warning():
        load_network(net)


@contextmanager
def _no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        yield

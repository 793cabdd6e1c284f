"""`flowpath bench ipsec-flows|ipsec-sizes` with tiny counts (fast on the classic path too): JSON keys
and sane values, real PNGs, verified inner traffic, no drops, and usage errors that exit 2. No timing
assertions: the numbers depend on the machine and on whether the IPsec fast path has landed."""

from __future__ import annotations

import json

import pytest

from flowpath.bench import ipsec
from flowpath.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
POINT = (
    "flows",
    "frame_size",
    "bulk",
    "encap_mpps",
    "encap_gbps",
    "decap_mpps",
    "decap_gbps",
    "encap_mpps_warm",
    "decap_mpps_warm",
    "fastpath_share",
)
TINY = ["--packets", "64", "--reps", "2"]


def _png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 20_000


def _sane(x: dict, packets: int) -> None:
    for key in POINT:
        assert key in x
    assert x["verified"] is True and x["drops"] == 0
    for d in ("encap", "decap"):
        c = x[d]
        assert x[f"{d}_mpps"] > 0 and x[f"{d}_gbps"] > 0 and c["drops"] == {}
        assert x[f"{d}_mpps_warm"] > 0 and x[f"{d}_warm"]["drops"] == {}
        # Gbps of the inner L2 frame with FCS, as the bulking scenario counts it
        assert x[f"{d}_gbps"] == pytest.approx(x[f"{d}_mpps"] * x["frame_size"] * 8 / 1e3, rel=1e-3)
        assert c["tx_packets"] == c["rx_packets"] == packets * c["repetitions"]
        assert c["fastpath_packets"] + c["slowpath_packets"] == c["tx_packets"]
    assert 0.0 <= x["fastpath_share"] <= 1.0


def test_ipsec_flows_writes_json_and_two_pngs_with_bulk_on_and_off(tmp_path):
    j, p = tmp_path / "i.json", tmp_path / "ipsec.png"
    assert main(["bench", "ipsec-flows", "--flows", "1,8", *TINY, "--json", str(j), "--plot", str(p)]) == 0
    r = json.loads(j.read_text())
    assert r["scenario"] == "ipsec-flows" and r["alg"] == "rfc4106(gcm(aes))" and r["frame_size"] == 128
    assert r["packets_per_repetition"] == 64 and r["flows"] == [1, 8]
    assert [(x["flows"], x["bulk"]) for x in r["results"]] == [(1, True), (1, False), (8, True), (8, False)]
    for x in r["results"]:
        _sane(x, 64)
        assert x["frame_size"] == 128 and x["esp_frame_bytes"] > 128
    assert _png(p) and _png(tmp_path / "ipsec-mpps.png")


def test_ipsec_sizes_measures_each_size_at_each_flow_count_with_chacha(tmp_path):
    """RFC 7634: ChaCha20-Poly1305 for ESP, a 256-bit key plus a 32-bit salt."""
    j, p = tmp_path / "s.json", tmp_path / "s.png"
    rc = main(["bench", "ipsec-sizes", "--alg", "chacha", "--flows", "1,4", "--packets", "32", "--reps", "1",
               "--json", str(j), "--plot", str(p)])  # fmt: skip
    assert rc == 0
    r = json.loads(j.read_text())
    assert r["scenario"] == "ipsec-sizes" and r["alg"] == "rfc7539esp(chacha20,poly1305)"
    assert [(x["flows"], x["frame_size"]) for x in r["results"]] == [
        (n, s) for n in (1, 4) for s in ipsec.SIZES
    ]
    for x in r["results"]:
        _sane(x, 32)
        assert x["bulk"] is True
    assert _png(p)


def test_python_api_counts_timed_packets_per_path():
    r = ipsec.ipsec_flows((3,), 64, packets=40, reps=3, budget_s=0.0, batch_size=16)
    for x in r["results"]:
        _sane(x, 40)
        assert x["encap"]["repetitions"] == ipsec.MIN_REPS  # the budget is spent: stop after the minimum


def test_replayed_esp_fails_loudly_instead_of_measuring_drops(monkeypatch):
    """RFC 4303 §3.4.3: without the window reset, repetition 2 of the decap pool is all replays."""
    monkeypatch.setattr(ipsec, "replay_window_reset", lambda x: None)
    with pytest.raises(RuntimeError, match="xfrm_in_replay"):
        ipsec.ipsec_flows((1,), packets=16, reps=2)


def test_decap_verification_catches_a_changed_payload():
    pair = ipsec.IpsecPair.build()
    up, _ = ipsec.inner_frames(2, 128)
    ipsec.establish(pair, 2)
    esp = [f for _, f in ipsec.transmitted(pair.west, ipsec.batches(up, pair.lan, 8))]
    ipsec.verify_encap(esp, ipsec.SPI_WE)
    out = [f for _, f in ipsec.transmitted(pair.east, ipsec.batches(esp, pair.wan, 8))]
    ipsec.verify_decap(out, up)
    bad = out[:1] + [out[1][:-1] + bytes([out[1][-1] ^ 1])]
    with pytest.raises(RuntimeError, match="differs"):
        ipsec.verify_decap(bad, up)
    with pytest.raises(RuntimeError, match="not ESP"):
        ipsec.verify_encap(up, ipsec.SPI_WE)


def test_gateways_mirror_each_other():
    """One SA pair: west's outbound SA is east's inbound one (xfrm_state_lookup by daddr and SPI)."""
    pair = ipsec.IpsecPair.build(alg="chacha")
    assert pair.sa("west", ipsec.SPI_WE).key == pair.sa("east", ipsec.SPI_WE).key
    assert pair.sa("east", ipsec.SPI_EW).salt == pair.sa("west", ipsec.SPI_EW).salt
    assert len(pair.sa("west", ipsec.SPI_WE).key) == 32
    assert pair.max_frame_size() == 1464  # 1500 - outer IPv4 20 - ESP 8 - IV 8 - ICV 16 - 2, aligned, + 18


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ipsec-flows", "--alg", "aes-cbc"], "unknown --alg"),
        (["ipsec-flows", "--frame-size", "1518"], "MTU 1500"),
        (["ipsec-sizes", "--frame-size", "128"], "takes no --frame-size"),
        (["ipsec-flows", "--flows", "1,x"], "comma-separated integers"),
        (["bulking", "--packets", "10"], "apply to ipsec-flows and ipsec-sizes only"),
        (["ipsec-flows", "--packets", "0"], "--packets"),
    ],
)
def test_wrong_options_exit_2_with_a_clear_message(capsys, args, message):
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err

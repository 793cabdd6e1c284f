"""An ESP tunnel-mode gateway on the classic path, with Scapy's SecurityAssociation as the other end.

Linux: ip_forward (fwd policy check, xfrm4_route_forward), xfrm_output, xfrm_input; RFC 4303, RFC 4106.
"""

from __future__ import annotations

from pathlib import Path

from gateway import run
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset

KEY = bytes(range(1, 17)) + b"\xca\xfe\xba\xbe"  # AES-128 key + 4-byte salt (rfc4106)
GW_LAN, GW_WAN, PEER_MAC, HOST_MAC = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:02:02",
    "02:00:00:00:01:05",
)
NET = (Path(__file__).resolve().parents[1] / "data" / "net" / "ipsec_gateway.ip").read_text()
RULES = "table inet f {\n\tchain fw {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n"


def sa(spi: int, src: str, dst: str) -> SecurityAssociation:
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=KEY, auth_algo="NULL",
                               tunnel_header=IP(src=src, dst=dst))  # fmt: skip


def gw():
    return parse_network(NET, "ipsec.ip"), parse_ruleset(RULES)


def test_lan_traffic_leaves_encrypted_and_decrypts_with_scapy(tmp_path):
    net, rules = gw()
    inner = IP(src="10.1.0.5", dst="10.2.0.7", ttl=30) / UDP(sport=1111, dport=2222) / Raw(b"secret payload")
    out, stats, _ = run(tmp_path, [("lan0", Ether(src=HOST_MAC, dst=GW_LAN) / inner)], net=net, rules=rules)
    (o,) = out["wan0"]
    assert (o.src, o.dst) == (GW_WAN, PEER_MAC) and o[IP].proto == 50
    assert (o[IP].src, o[IP].dst, o[ESP].spi, o[ESP].seq) == ("192.0.2.1", "192.0.2.2", 0x1001, 1)
    assert b"secret payload" not in bytes(o)
    plain = sa(0x1001, "192.0.2.1", "192.0.2.2").decrypt(o[IP])
    assert plain[IP].src == "10.1.0.5" and plain[IP].ttl == 29 and bytes(plain[Raw]) == b"secret payload"
    assert stats["tx_packets"] == 1


def test_scapy_esp_is_decrypted_forwarded_and_replays_are_dropped(tmp_path):
    net, rules = gw()
    peer = sa(0x2002, "192.0.2.2", "192.0.2.1")
    inner = IP(src="10.2.0.7", dst="10.1.0.5", ttl=20) / UDP(sport=2222, dport=1111) / Raw(b"from the peer")
    esp1 = peer.encrypt(inner)
    esp2 = peer.encrypt(inner)
    bad = IP(bytes(peer.encrypt(inner)))
    bad_raw = bytearray(bytes(bad))
    bad_raw[-1] ^= 0x55  # ICV
    frames = [Ether(src=PEER_MAC, dst=GW_WAN) / p for p in (esp1, esp2, IP(bytes(esp1)), IP(bytes(bad_raw)))]
    plain = Ether(src=PEER_MAC, dst=GW_WAN) / inner  # plaintext where the fwd policy demands ESP
    out, stats, _ = run(tmp_path, [("wan0", f) for f in frames] + [("wan0", plain)], net=net, rules=rules)
    assert len(out["lan0"]) == 2
    for o in out["lan0"]:
        assert o.dst == HOST_MAC and o[IP].dst == "10.1.0.5" and o[IP].ttl == 19
        assert bytes(o[Raw]) == b"from the peer"
    assert stats["drops"] == {"xfrm_in_replay": 1, "xfrm_in_icv": 1, "xfrm_policy": 1}


def test_dump_xfrm_lists_states_and_policies_with_counters(tmp_path):
    from scapy.all import wrpcap

    from flowpath.cli import main

    (tmp_path / "gw.ip").write_text(NET)
    (tmp_path / "gw.nft").write_text(RULES)
    p = Ether(src=HOST_MAC, dst=GW_LAN) / IP(src="10.1.0.5", dst="10.2.0.7") / UDP() / Raw(b"x")
    wrpcap(str(tmp_path / "l.pcap"), [p, p])
    rc = main(["replay", "-n", str(tmp_path / "gw.ip"), "-r", str(tmp_path / "gw.nft"), "--in",
               f"lan0={tmp_path / 'l.pcap'}", "--out-dir", str(tmp_path / "o"), "-q",
               "--dump-xfrm", str(tmp_path / "x.txt")])  # fmt: skip
    assert rc == 0
    text = (tmp_path / "x.txt").read_text()
    assert "spi 0x00001001" in text and "dir fwd" in text and "mode tunnel" in text
    assert "oseq 0x2" in text  # two packets went out through the SA


def test_nat_traversal_esp_in_udp_both_ways(tmp_path):
    """RFC 3948: ESP in UDP 4500 out and in; IKE's non-ESP marker is left to the slow path (local)."""
    net_text = "\n".join(
        ln.replace("mode tunnel", "mode tunnel encap espinudp 4500 4500 0.0.0.0")
        if ln.startswith("xfrm state")
        else ln
        for ln in NET.splitlines()
    )
    net, rules = parse_network(net_text, "natt.ip"), parse_ruleset(RULES)
    natt = UDP(sport=4500, dport=4500)
    up = (
        Ether(src=HOST_MAC, dst=GW_LAN)
        / IP(src="10.1.0.5", dst="10.2.0.7")
        / UDP(sport=1, dport=2)
        / Raw(b"u")
    )
    peer = SecurityAssociation(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=KEY, auth_algo="NULL",
                               tunnel_header=IP(src="192.0.2.2", dst="192.0.2.1"), nat_t_header=natt)  # fmt: skip
    down = Ether(src=PEER_MAC, dst=GW_WAN) / peer.encrypt(
        IP(src="10.2.0.7", dst="10.1.0.5") / UDP() / Raw(b"d")
    )
    ike = (
        Ether(src=PEER_MAC, dst=GW_WAN) / IP(src="192.0.2.2", dst="192.0.2.1") / natt / Raw(bytes(4) + b"IKE")
    )
    out, stats, _ = run(tmp_path, [("lan0", up), ("wan0", down), ("wan0", ike)], net=net, rules=rules)
    (o,) = [p for p in out["wan0"] if p.haslayer(UDP) and p[UDP].dport == 4500]
    mine = SecurityAssociation(ESP, spi=0x1001, crypt_algo="AES-GCM", crypt_key=KEY, auth_algo="NULL",
                               tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"), nat_t_header=natt)  # fmt: skip
    assert bytes(mine.decrypt(o[IP])[Raw]) == b"u"
    (d,) = out["lan0"]
    assert d[IP].src == "10.2.0.7" and bytes(d[Raw]) == b"d"
    assert stats["drops"].get("xfrm_no_state", 0) == 0

"""Per-CPU SAs (RFC 9611, Linux 6.13 `pcpu-num`): each worker encrypts with the SA pinned to its CPU.

Linux: net/xfrm/xfrm_state.c › xfrm_state_find and xfrm_state_look_at (pcpu_id), km_query;
XFRM_POLICY_CPU_ACQUIRE (include/uapi/linux/xfrm.h); iproute2 ip/xfrm_state.c (`pcpu-num`),
ip/ipxfrm.c (listing), ip/xfrm_monitor.c (ACQUIRE). Two Workers over the same network file act as CPUs
0 and 1 (`net.cpu`); real packets go through them, and Scapy decrypts every ESP packet they send with
the key of the SA whose SPI it carries.
"""

from __future__ import annotations

import os
import re

import pytest
from scapy.all import IP, UDP, Ether, Raw
from scapy.layers.ipsec import ESP, SecurityAssociation

from flowpath.config.ipbatch import parse_network
from flowpath.config.nft import parse_ruleset
from flowpath.ctl.commands import ctl_dispatch
from flowpath.datapath import Worker
from flowpath.errors import ConfigError
from flowpath.packet.batch import PacketBatch
from flowpath.xfrm import evp
from flowpath.xfrm.config import xfrm_config_line
from flowpath.xfrm.km import xfrm_register_km, xfrm_unregister_km
from flowpath.xfrm.listing import xfrm_policy_list, xfrm_state_list
from flowpath.xfrm.state import Xfrm

pytestmark = pytest.mark.skipif(not evp.evp_load(), reason="the compiled ESP path needs libcrypto")

GW_LAN, GW_WAN, PEER, HOST = (
    "02:00:00:00:01:01",
    "02:00:00:00:02:01",
    "02:00:00:00:02:02",
    "02:00:00:00:01:05",
)
LAN0, WAN0, T0, SEC = 2, 3, 1_700_000_000 * 10**9, 10**9
KEYS = {  # SPI -> AES-GCM-128 key + salt of the SA west sends with
    0x1000: bytes(range(1, 21)),  # no pcpu-num: the fallback
    0x1100: bytes(range(21, 41)),  # pcpu-num 0
    0x1101: bytes(range(41, 61)),  # pcpu-num 1
}
KEY_IN = bytes(range(61, 81))  # SA 0x2002, east -> west
PIN = {0x1000: "", 0x1100: " pcpu-num 0", 0x1101: " pcpu-num 1"}
RULES = (
    "table inet f {\n\tflowtable ft {\n\t\thook ingress priority filter\n\t\tdevices = { lan0, wan0 }\n\t}\n"
    "\tchain fw {\n\t\ttype filter hook forward priority filter; policy accept;\n"
    "\t\tmeta l4proto { tcp, udp } flow add @ft\n\t}\n}\n"
)


def net_text(out_spis=(0x1000, 0x1100, 0x1101), flag=" flag 0x4", in_pin="") -> str:
    """west (examples/ipsec) with one outbound SA per SPI given and the out policy's flag."""
    sas = "".join(
        f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi {spi:#x} reqid 1 mode tunnel "
        f"aead 'rfc4106(gcm(aes))' 0x{KEYS[spi].hex()} 128{PIN[spi]}\n"
        for spi in out_spis
    )
    return f"""\
link add lan0 address {GW_LAN}
link add wan0 address {GW_WAN}
link set lan0 up
link set wan0 up
addr add 10.1.0.1/16 dev lan0
addr add 192.0.2.1/24 dev wan0
route add 10.2.0.0/16 via 192.0.2.2 dev wan0
neigh add 192.0.2.2 lladdr {PEER} dev wan0
neigh add 10.1.0.5 lladdr {HOST} dev lan0
{sas}xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x2002 reqid 2 mode tunnel replay-window 64 \
aead 'rfc4106(gcm(aes))' 0x{KEY_IN.hex()} 128{in_pin}
xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out{flag} tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 1 \
mode tunnel
xfrm policy add src 10.2.0.0/16 dst 10.1.0.0/16 dir fwd tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 2 mode tunnel
xfrm policy add src 10.2.0.0/16 dst 10.1.0.0/16 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 2 mode tunnel
"""


def worker(cpu: int, text: str | None = None, **kw) -> Worker:
    """A Worker acting as CPU `cpu` (each builds its own Net over the same network file text)."""
    w = Worker(parse_network(text or net_text(), "west.ip"), parse_ruleset(RULES), **kw)
    w.net.cpu = cpu
    return w


def up(sport: int, k: int) -> Ether:
    return (
        Ether(src=HOST, dst=GW_LAN)
        / IP(src="10.1.0.5", dst="10.2.0.7")
        / UDP(sport=sport, dport=2000)
        / Raw(b"up-%d-%03d" % (sport, k))
    )


def down(sport: int, seq: int) -> Ether:
    sa = SecurityAssociation(ESP, spi=0x2002, crypt_algo="AES-GCM", crypt_key=KEY_IN,
                             tunnel_header=IP(src="192.0.2.2", dst="192.0.2.1"))  # fmt: skip
    inner = IP(src="10.2.0.7", dst="10.1.0.5") / UDP(sport=2000, dport=sport) / Raw(b"down")
    return Ether(src=PEER, dst=GW_WAN) / sa.encrypt(inner, seq_num=seq)


def poll(w: Worker, frames: list[tuple[int, Ether]], ts_ns: int) -> list[Ether]:
    b = PacketBatch(max(1, len(frames)))
    for ifx, f in frames:
        b.append(bytes(f), ifx, ts_ns)
    return [Ether(f) for _, f, _ in w.poll(b).frames()]


def decrypt(frame: Ether) -> tuple[int, int, bytes]:
    """(SPI, sequence number, inner UDP payload): Scapy decrypts with the key of the SA whose SPI the
    packet carries."""
    esp = frame[ESP]
    sa = SecurityAssociation(ESP, spi=esp.spi, crypt_algo="AES-GCM", crypt_key=KEYS[esp.spi],
                             tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))  # fmt: skip
    inner = sa.decrypt(frame[IP])
    return esp.spi, esp.seq, bytes(inner[UDP].payload)


def test_each_worker_encrypts_with_the_sa_pinned_to_its_cpu_on_both_paths():
    """xfrm_state_look_at: an SA whose pcpu_num is this CPU's beats the unpinned one; the flowtable
    entry keeps the SA its classic path chose, so the fast path sends with it too."""
    for cpu, spi in ((0, 0x1100), (1, 0x1101)):
        w = worker(cpu)
        sent = poll(w, [(LAN0, up(1000, 0))], T0)
        assert len(poll(w, [(WAN0, down(1000, 1))], T0 + 1000)) == 1  # the reply offloads the flow
        fast = w.stats.fastpath_packets
        sent += poll(w, [(LAN0, up(1000, k)) for k in range(1, 6)], T0 + 2000)
        assert w.stats.fastpath_packets == fast + 5  # the flowtable's ESP output
        got = [decrypt(f) for f in sent]
        assert got == [(spi, k + 1, b"up-1000-%03d" % k) for k in range(6)], (cpu, got)
        assert w.xfrm.acquire_count == {}  # each CPU had its SA: nothing to ask for


def test_without_its_own_sa_a_cpu_uses_the_fallback_and_raises_one_acquire_while_pending():
    """XFRM_POLICY_CPU_ACQUIRE: CPU 1 has no SA of its own; the unpinned SA carries its packets and
    one ACQUIRE for CPU 1 goes out (km_query with pcpu_num 1), not one per packet, until the larval
    state's net.core.xfrm_acq_expires (30 s) are up; CPU 0's pinned SA raises nothing."""
    text = net_text(out_spis=(0x1000, 0x1100))
    w0, w1 = worker(0, text), worker(1, text)
    heard = []
    xfrm_register_km(w1.xfrm, heard.append)
    flood = [(LAN0, up(1000 + k, k)) for k in range(20)]  # 20 new flows
    got1 = [decrypt(f) for f in poll(w1, flood, T0)]
    got0 = [decrypt(f) for f in poll(w0, flood, T0)]
    assert got1 == [(0x1000, k + 1, b"up-%d-%03d" % (1000 + k, k)) for k in range(20)]
    assert got0 == [(0x1100, k + 1, b"up-%d-%03d" % (1000 + k, k)) for k in range(20)]
    assert (w1.xfrm.acquire_count, w0.xfrm.acquire_count) == ({1: 1}, {})
    assert heard == [
        "acquire proto esp \n"
        "  sel src 10.1.0.5/32 dst 10.2.0.7/32 proto udp sport 1000 dport 2000 dev wan0 \n"
        "  policy src 10.1.0.0/16 dst 10.2.0.0/16 \n"
        "    \tdir out priority 0 ptype main flag 4\n"
        "    \ttmpl src 192.0.2.1 dst 192.0.2.2\n"
        "    \t\tproto esp reqid 1 mode tunnel\n"
        "\tpcpu-num 1\n"
        "\n"
    ]
    poll(w1, flood[:3], T0 + 29 * SEC)  # still pending
    assert w1.xfrm.acquire_count == {1: 1}
    poll(w1, flood[3:4], T0 + 31 * SEC)  # the larval state expired: asked again
    assert w1.xfrm.acquire_count == {1: 2} and len(heard) == 2 and "sport 1003 " in heard[1]


def test_the_acquire_is_answered_by_adding_the_sa_pinned_to_that_cpu():
    """xfrm_state_add of an SA with the larval state's pcpu_num deletes it (__find_acq_core); the
    CPU's next new flow goes out through its new SA."""
    w = worker(1, net_text(out_spis=(0x1000, 0x1100)))
    assert [decrypt(f)[0] for f in poll(w, [(LAN0, up(1000, 0))], T0)] == [0x1000]
    gw = _Gw(w)
    add = ("ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1101 reqid 1 mode tunnel aead "
           f"rfc4106(gcm(aes)) 0x{KEYS[0x1101].hex()} 128 pcpu-num 1").split()  # fmt: skip
    assert ctl_dispatch(gw, {"argv": add})["rc"] == 0
    assert w.xfrm.acq == []
    assert [decrypt(f)[0] for f in poll(w, [(LAN0, up(1001, 1))], T0 + SEC)] == [0x1101]
    assert w.xfrm.acquire_count == {1: 1}


def test_an_sa_pinned_to_another_cpu_is_never_used_even_without_the_flag():
    """xfrm_state_look_at skips a valid SA pinned to another CPU whatever the policy's flags; with no
    SA left, the packet is dropped (XFRM_NO_STATE) and one plain ACQUIRE (no pcpu-num) is raised."""
    for flag in (" flag 0x4", ""):
        w = worker(1, net_text(out_spis=(0x1100,), flag=flag))
        assert poll(w, [(LAN0, up(1000 + k, k)) for k in range(5)], T0) == []
        assert w.stats.as_dict(w.ifname)["drops"] == {"xfrm_no_state": 5}
        assert w.xfrm.acquire_count == {1: 1}
        text = ctl_dispatch(_Gw(w), {"argv": ["ip", "xfrm", "monitor"]})["out"]
        assert text.startswith("acquire proto esp \n") and "pcpu-num" not in text
        w0 = worker(0, net_text(out_spis=(0x1100,), flag=flag))
        assert [decrypt(f)[0] for f in poll(w0, [(LAN0, up(1000, 0))], T0)] == [0x1100]


def test_without_the_flag_a_cpu_still_prefers_its_pinned_sa_and_never_asks():
    """Without XFRM_POLICY_CPU_ACQUIRE xfrm_state_find returns the best SA found: CPU 1 its pinned
    one, CPU 0 (none pinned to it) the unpinned one, and no ACQUIRE either way."""
    text = net_text(out_spis=(0x1000, 0x1101), flag="")
    w0, w1 = worker(0, text), worker(1, text)
    assert [decrypt(f)[0] for f in poll(w0, [(LAN0, up(1000, 0))], T0)] == [0x1000]
    assert [decrypt(f)[0] for f in poll(w1, [(LAN0, up(1000, 0))], T0)] == [0x1101]
    assert w0.xfrm.acquire_count == w1.xfrm.acquire_count == {}


def test_inbound_esp_is_found_by_spi_whatever_the_sa_pcpu_num():
    """xfrm_state_lookup (daddr, SPI, proto) has no CPU in its key: an inbound SA pinned to CPU 1
    decrypts on CPU 0 too."""
    w = worker(0, net_text(in_pin=" pcpu-num 1"))
    out = poll(w, [(WAN0, down(1000, 1))], T0)
    assert len(out) == 1 and bytes(out[0][UDP].payload) == b"down" and out[0][IP].dst == "10.1.0.5"


def _parse_state_listing(text: str) -> list[str]:
    """`ip xfrm state` blocks back into `xfrm state add` lines (the words flowpath lists)."""
    lines = []
    for block in re.split(r"\n(?=src )", text.strip()):
        m = re.match(r"src (\S+) dst (\S+)\n\tproto esp spi (\S+) reqid (\d+) mode tunnel\n"
                     r"\treplay-window (\d+)\n\taead (\S+) (\S+) (\d+)\n", block)  # fmt: skip
        assert m, block
        pcpu = re.search(r"^\tpcpu-num (\d+)$", block, re.M)
        esn = re.search(r"^\t replay_window (\d+),", block, re.M)  # a window over 32: the ESN context's
        lines.append(f"xfrm state add src {m[1]} dst {m[2]} proto esp spi {m[3]} reqid {m[4]} mode tunnel "
                     f"replay-window {esn[1] if esn else m[5]} aead '{m[6]}' {m[7]} {m[8]}"
                     + (f" pcpu-num {pcpu[1]}" if pcpu else ""))  # fmt: skip
    return lines


def test_listing_shows_pcpu_num_and_the_policy_flag_and_parses_back():
    """iproute2 xfrm_xfrma_print ends the state's attributes with "\\tpcpu-num N" (XFRMA_SA_PCPU, then
    the selector line); xfrm_policy_info_print writes "flag 4" (CPU_ACQUIRE has no name there)."""
    w = worker(0)
    listing = xfrm_state_list(w.xfrm)
    blocks = listing.split("src 192.0.2.1 dst 192.0.2.2\n")[1:]
    assert [re.findall(r"\tpcpu-num (\d+)\n\tsel src", b) for b in blocks] == [[], ["0"], ["1"]]
    assert "\tdir out priority 0 flag 4\n" in xfrm_policy_list(w.xfrm)
    again = Xfrm()
    for k, line in enumerate(_parse_state_listing(listing)):
        words = re.findall(r"'[^']*'|\S+", line)
        xfrm_config_line(words, "listing", k + 1, [1] * len(words), again)
    assert xfrm_state_list(again) == listing
    pol = Xfrm()
    xfrm_config_line(
        "xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out flag 0x04".split(), "p", 1, [1] * 9, pol
    )
    assert [p.flags for p in pol.policies] == [4]
    sel = "xfrm policy list flag 0x4".split()
    assert ctl_dispatch(_Gw(w), {"argv": ["ip", *sel]})["out"].count("dir out") == 1


class _Gw:
    """The attributes of the live Gateway that ctl_dispatch reads."""

    def __init__(self, w: Worker):
        self.worker, self.net_path, self.rules_path, self.started_ns = w, "west.ip", None, 0
        self.cpus = [w]

    def port_counters(self) -> dict:
        return {}


def test_ctl_stats_counts_acquires_per_cpu_and_monitor_prints_them():
    w = worker(1, net_text(out_spis=(0x1000,)))
    poll(w, [(LAN0, up(1000, 0))], T0)
    gw = _Gw(w)
    r = ctl_dispatch(gw, {"argv": ["stats", "--json"]})
    assert (r["json"]["xfrm_acquire"], r["json"]["xfrm_acquire_pending"]) == ({"1": 1}, 1)
    assert "xfrm acquires: cpu1 1  pending 1\n" in ctl_dispatch(gw, {"argv": ["stats"]})["out"]
    mon = ctl_dispatch(gw, {"argv": ["ip", "xfrm", "monitor", "acquire"]})["out"]
    assert mon.count("acquire proto esp") == 1 and mon.endswith("\tpcpu-num 1\n\n")
    r = ctl_dispatch(gw, {"argv": ["ip", "xfrm", "monitor", "expire"]})
    assert r["rc"] == 2 and '"expire" is not recorded' in r["err"]


def test_unregistered_listener_hears_nothing_more():
    w = worker(1, net_text(out_spis=(0x1000,)))
    heard = []
    km = xfrm_register_km(w.xfrm, heard.append)
    poll(w, [(LAN0, up(1000, 0))], T0)
    xfrm_unregister_km(w.xfrm, km)
    poll(w, [(LAN0, up(1001, 1))], T0 + 40 * SEC)
    assert len(heard) == 1 and w.xfrm.acquire_count == {1: 2}


def test_replay_dump_xfrm_shows_pcpu_num_and_the_acquire(tmp_path):
    """`replay --dump-xfrm`: the states with their pcpu-num, the policy's flag, the ACQUIREs raised."""
    from scapy.all import wrpcap

    from flowpath.cli import main

    (tmp_path / "gw.ip").write_text(net_text(out_spis=(0x1000, 0x1101)))
    (tmp_path / "gw.nft").write_text(RULES)
    wrpcap(str(tmp_path / "l.pcap"), [up(1000, 0), up(1000, 1)])
    rc = main(["replay", "-n", str(tmp_path / "gw.ip"), "-r", str(tmp_path / "gw.nft"), "--in",
               f"lan0={tmp_path / 'l.pcap'}", "--out-dir", str(tmp_path / "o"), "-q",
               "--dump-xfrm", str(tmp_path / "x.txt")])  # fmt: skip
    assert rc == 0
    text = (tmp_path / "x.txt").read_text()
    assert "spi 0x00001101 reqid 1 mode tunnel" in text and "\tpcpu-num 1\n\tsel src" in text
    assert "flag 4" in text
    assert text.count("acquire proto esp") == 1 and text.endswith("\tpcpu-num 0\n\n")  # replay runs as CPU 0


@pytest.mark.parametrize(
    "words, msg",
    [
        ("pcpu-num x", '"x" is not a valid pcpu-num'),
        (f"pcpu-num {os.cpu_count()}", "pCPU number too big"),  # xfrm_state_construct: >= num_possible_cpus()
        ("pcpu-num 0x100000000", "out of range"),  # get_u32
    ],
)
def test_state_pcpu_num_errors_name_the_column(words, msg):
    line = ("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x7 reqid 1 mode tunnel "
            f"aead 'rfc4106(gcm(aes))' 0x{KEYS[0x1000].hex()} 128 {words}")  # fmt: skip
    with pytest.raises(ConfigError) as e:
        parse_network(line + "\n", "bad.ip")
    col = line.rindex(words.split()[1]) + 1  # the caret under the value
    assert (e.value.line, e.value.col) == (1, col) and msg in str(e.value), str(e.value)


def test_pcpu_num_ffffffff_means_none_as_iproute2_sends_it():
    """iproute2 keeps -1 (0xffffffff) for "not given": no XFRMA_SA_PCPU."""
    line = ("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x7 reqid 1 mode tunnel "
            f"aead 'rfc4106(gcm(aes))' 0x{KEYS[0x1000].hex()} 128 pcpu-num 0xffffffff")  # fmt: skip
    assert "pcpu-num" not in xfrm_state_list(parse_network(line + "\n", "ok.ip").xfrm)


@pytest.mark.parametrize(
    "flag, msg",
    [
        ("4", '"4" is not a valid flag (a hex number'),
        ("localok", 'flag "localok" is not supported'),
        ("0x1", "flag 0x1 is not supported"),
        ("0x100", "out of range"),
        ("0xzz", "is not a valid flag (hex"),
    ],
)
def test_policy_flag_errors_name_the_column(flag, msg):
    line = f"xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out flag {flag} tmpl src 1.1.1.1 dst 2.2.2.2"
    with pytest.raises(ConfigError) as e:
        parse_network(line + "\n", "bad.ip")
    assert (e.value.line, e.value.col) == (1, line.index(f"flag {flag}") + 6) and msg in str(e.value), str(
        e.value
    )


def test_ctl_state_add_with_pcpu_num_error_points_at_the_word():
    w = worker(0)
    argv = ("ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x9 reqid 1 mode tunnel aead "
            f"rfc4106(gcm(aes)) 0x{KEYS[0x1000].hex()} 128 pcpu-num {os.cpu_count()}").split()  # fmt: skip
    r = ctl_dispatch(_Gw(w), {"argv": argv})
    assert r["rc"] == 2 and "<ctl>:1:" in r["err"] and "pCPU number too big" in r["err"], r


def test_cpu1_sends_the_same_bytes_with_and_without_the_flowtable():
    """DESIGN.md §1 for per-CPU SAs: the fast path encrypts with the SA the classic path chose for
    this CPU, so both paths emit identical frames (sequence numbers included)."""
    frames = [[(LAN0, up(1000, 0))], [(WAN0, down(1000, 1))], [(LAN0, up(1000, k)) for k in range(1, 8)]]
    outs = []
    for ft in (True, False):
        w = worker(1, flowtable=ft)
        outs.append([bytes(f) for k, batch in enumerate(frames) for f in poll(w, batch, T0 + k * 1000)])
        assert (w.stats.fastpath_packets > 0) == ft
    assert outs[0] == outs[1] and {decrypt(Ether(f))[0] for f in outs[0] if ESP in Ether(f)} == {0x1101}


def test_sysctl_xfrm_acq_expires_sets_how_long_an_acquire_stays_pending():
    """net.core.xfrm_acq_expires (Linux: net->xfrm.sysctl_acq_expires) is the larval state's life."""
    w = worker(1, net_text(out_spis=(0x1000,)), sysctl={"net.core.xfrm_acq_expires": 5})
    for k, t in enumerate((0, 4, 6, 10, 12)):
        poll(w, [(LAN0, up(1000 + k, k))], T0 + t * SEC)
    assert w.xfrm.acquire_count == {1: 3}  # at 0, 6 (0 + 5 passed) and 12 s (6 + 5 passed)


def test_an_icmp_acquire_selector_carries_type_and_code():
    """__xfrm4_init_tempsel: ICMP's type and code stand in the selector's ports (xfrm_flowi_sport),
    and iproute2 prints them as such."""
    from scapy.all import ICMP

    w = worker(1, net_text(out_spis=(0x1000,)))
    echo = (
        Ether(src=HOST, dst=GW_LAN) / IP(src="10.1.0.5", dst="10.2.0.7") / ICMP(type=8, id=7) / Raw(b"ping")
    )
    sent = poll(w, [(LAN0, echo)], T0)
    assert [f[ESP].spi for f in sent] == [0x1000]
    mon = ctl_dispatch(_Gw(w), {"argv": ["ip", "xfrm", "monitor"]})["out"]
    assert "  sel src 10.1.0.5/32 dst 10.2.0.7/32 proto icmp type 8 code 0 dev wan0 \n" in mon

"""`xfrm state|policy add` lines, the SPD lookup and policy check, and the listings.

Linux: iproute2 ip/xfrm_state.c, ip/xfrm_policy.c, ip/ipxfrm.c; net/xfrm/xfrm_policy.c ›
xfrm_policy_lookup_bytype, __xfrm_policy_check; net/xfrm/xfrm_user.c › verify_replay.
"""

from __future__ import annotations

import ipaddress
import shlex

import pytest

from flowpath.errors import ConfigError
from flowpath.xfrm import evp
from flowpath.xfrm.config import xfrm_config_line
from flowpath.xfrm.listing import xfrm_policy_list, xfrm_state_list
from flowpath.xfrm.policy import (
    XFRM_POLICY_BLOCK,
    XFRM_POLICY_FWD,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    xfrm_lookup,
    xfrm_policy_check,
)
from flowpath.xfrm.state import AF_INET, AF_INET6, Xfrm, xfrm_state_find, xfrm_state_lookup

KEY20 = "0x" + "11" * 20
KEY36 = "0x" + "22" * 36


def load(*lines: str) -> Xfrm:
    x = Xfrm()
    for n, text in enumerate(lines, 1):
        toks = shlex.split(text)
        cols, pos = [], 0
        for t in text.split():
            pos = text.index(t, pos)
            cols.append(pos + 1)
            pos += len(t)
        xfrm_config_line(toks, "net.ip", n, cols, x, source=text)
    return x


def error(line: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(line)
    return e.value


GW = (
    f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 reqid 1 mode tunnel "
    f"aead 'rfc4106(gcm(aes))' {KEY20} 128 replay-window 32",
    f"xfrm state add src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x200 reqid 2 mode tunnel "
    f"aead 'rfc7539esp(chacha20,poly1305)' {KEY36} 128 replay-window 1024 flag esn "
    "encap espinudp 4500 4500 0.0.0.0 limit packet-soft 100 limit packet-hard 200 limit time-hard 3600",
    "xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out priority 10 "
    "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 1 mode tunnel",
    "xfrm policy add src 10.1.0.0/16 dst 10.2.9.0/24 proto tcp dport 22 dir out priority 5 action block",
    "xfrm policy add src 10.2.0.0/16 dst 10.1.0.0/16 dir fwd tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 2 "
    "mode tunnel",
)


def test_states_parsed_with_keys_salt_flags_encap_and_limits():
    x = load(*GW)
    a = xfrm_state_lookup(x, "192.0.2.2", 0x100)
    b = xfrm_state_lookup(x, ipaddress.ip_address("192.0.2.1").packed, 0x200)
    assert (a.alg, a.key, a.salt, a.replay_window, a.esn) == (
        evp.XFRM_AEAD_GCM,
        b"\x11" * 16,
        b"\x11" * 4,
        32,
        False,
    )
    assert (b.alg, len(b.key), b.esn, b.replay_window) == (evp.XFRM_AEAD_CHACHA, 32, True, 1024)
    assert (b.encap_sport, b.encap_dport, b.lft.soft_packet_limit, b.lft.hard_packet_limit) == (
        4500,
        4500,
        100,
        200,
    )
    assert b.lft.hard_add_expires_seconds == 3600
    assert xfrm_state_lookup(x, "192.0.2.2", 0x200) is None  # keyed by (daddr, spi, proto)


def test_spd_lookup_by_selector_and_priority():
    """xfrm_policy_lookup_bytype: lowest priority value first; block wins for ssh into 10.2.9/24."""
    x = load(*GW)
    p = xfrm_lookup(x, AF_INET, "10.1.0.5", "10.2.9.9", 6, 40000, 22, XFRM_POLICY_OUT)
    assert p.action == XFRM_POLICY_BLOCK
    p = xfrm_lookup(x, AF_INET, "10.1.0.5", "10.2.9.9", 6, 40000, 80, XFRM_POLICY_OUT)
    assert p.priority == 10 and p.tmpls[0].reqid == 1
    assert xfrm_state_find(x, p.tmpls[0]).spi == 0x100
    assert xfrm_lookup(x, AF_INET, "10.3.0.5", "10.2.9.9", 6, 1, 80, XFRM_POLICY_OUT) is None
    assert xfrm_lookup(x, AF_INET, "10.1.0.5", "10.2.9.9", 6, 1, 80, XFRM_POLICY_IN) is None


def test_decrypted_packet_needs_a_matching_policy():
    """__xfrm_policy_check: tunnel-mode traffic without a policy, or through the wrong SA, is refused."""
    x = load(*GW)
    sa_in = xfrm_state_lookup(x, "192.0.2.1", 0x200)
    sa_other = xfrm_state_lookup(x, "192.0.2.2", 0x100)
    fwd = XFRM_POLICY_FWD
    assert xfrm_policy_check(x, fwd, AF_INET, "10.2.0.1", "10.1.0.1", 17, 1, 2, [sa_in])
    assert not xfrm_policy_check(x, fwd, AF_INET, "10.2.0.1", "10.1.0.1", 17, 1, 2, [sa_other])
    assert not xfrm_policy_check(x, fwd, AF_INET, "10.9.0.1", "10.1.0.1", 17, 1, 2, [sa_in])  # no policy
    assert not xfrm_policy_check(
        x, fwd, AF_INET, "10.2.0.1", "10.1.0.1", 17, 1, 2, []
    )  # plaintext, policy wants esp
    assert xfrm_policy_check(
        x, fwd, AF_INET, "10.9.0.1", "10.8.0.1", 17, 1, 2, []
    )  # no policy, not decrypted
    assert x.stats_policy_block == 3


def test_ipv6_outer_and_inner_in_any_combination():
    x = load(
        f"xfrm state add src 2001:db8::1 dst 2001:db8::2 proto esp spi 7 reqid 3 mode tunnel aead "
        f"'rfc4106(gcm(aes))' 0x{'33' * 36} 128",
        "xfrm policy add src 10.1.0.0/16 dst 10.2.0.0/16 dir out tmpl src 2001:db8::1 dst 2001:db8::2 proto esp "
        "reqid 3 mode tunnel",
        "xfrm policy add src fd01::/64 dst fd02::/64 dir out tmpl src 2001:db8::1 dst 2001:db8::2 proto esp "
        "reqid 3 mode tunnel",
    )
    p4 = xfrm_lookup(x, AF_INET, "10.1.0.1", "10.2.0.1", 17, 1, 2, XFRM_POLICY_OUT)
    p6 = xfrm_lookup(x, AF_INET6, "fd01::1", "fd02::1", 17, 1, 2, XFRM_POLICY_OUT)
    assert xfrm_state_find(x, p4.tmpls[0]) is xfrm_state_find(x, p6.tmpls[0]) is not None
    assert xfrm_state_find(x, p4.tmpls[0]).family == AF_INET6


@pytest.mark.parametrize(
    ("line", "bad", "msg"),
    [
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto ah spi 1 mode tunnel aead x {KEY20} 128", "ah", "esp only"),
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 mode tunnel aead 'gcm(aes)' {KEY20} 128",
         "gcm(aes)", "not supported"),
        ("xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 mode tunnel aead 'rfc4106(gcm(aes))' "
         "0x1122 128", "0x1122", "key"),
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 mode tunnel aead 'rfc4106(gcm(aes))' "
         f"{KEY20} 64", "64", "ICV"),
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 mode tunnel aead 'rfc4106(gcm(aes))' "
         f"{KEY20} 128 replay-window 4097", "4097", "replay-window"),
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 mode transport aead 'rfc4106(gcm(aes))' "
         f"{KEY20} 128", "transport", "tunnel only"),
        (f"xfrm state add src 192.0.2.1 dst 2001:db8::2 proto esp spi 1 mode tunnel aead 'rfc4106(gcm(aes))' "
         f"{KEY20} 128", "2001:db8::2", "families"),
        ("xfrm state add src 192.0.2.1 dst 192.0.2.999 proto esp spi 1", "192.0.2.999", "not a valid"),
        (f"xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 1 aead 'rfc4106(gcm(aes))' {KEY20} 128 "
         "limit byte-medium 5", "byte-medium", "limit"),
        ("xfrm policy add src 10.0.0.0/8 dst 10.1.0.0/16 dir sideways", "sideways", "dir"),
        ("xfrm policy add src 10.0.0.0/8 dst 10.1.0.0/16 dport 22 dir out", "src", "proto"),
        ("xfrm policy add src 10.0.0.0/8 dst 10.1.0.0/16 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto ah",
         "ah", "esp"),
        ("xfrm tunnel add foo", "tunnel", "not supported"),
    ],
)  # fmt: skip
def test_bad_lines_point_at_the_token(line, bad, msg):
    e = error(line)
    assert msg in e.msg
    assert line[e.col - 1 :].lstrip("'").startswith(bad), (e.col, e.msg)
    assert e.path == "net.ip" and e.line == 1
    assert "^" in str(e)


def test_duplicate_state_is_an_error():
    x = load(GW[0])
    with pytest.raises(ConfigError, match="File exists"):
        xfrm_config_line(shlex.split(GW[0]), "net.ip", 2, list(range(1, 40)), x)


def test_state_listing_in_iproute2_style():
    x = load(*GW)
    text = xfrm_state_list(x)
    assert text.splitlines()[:5] == [
        "src 192.0.2.1 dst 192.0.2.2",
        "\tproto esp spi 0x00000100 reqid 1 mode tunnel",
        "\treplay-window 32",
        f"\taead rfc4106(gcm(aes)) {KEY20} 128",
        "\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000",
    ]
    assert "\treplay-window 0 flag esn" in text
    assert "\tencap type espinudp sport 4500 dport 4500 addr 0.0.0.0" in text
    assert "\t replay_window 1024, bitmap-length 32" in text
    assert text.count("\tsel src 0.0.0.0/0 dst 0.0.0.0/0\n") == 2
    assert "(INF)(bytes)" in xfrm_state_list(x, stats=True)


def test_policy_listing_in_iproute2_style():
    x = load(*GW)
    assert xfrm_policy_list(x).splitlines() == [  # lookup order: priority 0, 5, 10
        "src 10.2.0.0/16 dst 10.1.0.0/16 ",
        "\tdir fwd priority 0 ",
        "\ttmpl src 192.0.2.2 dst 192.0.2.1",
        "\t\tproto esp reqid 2 mode tunnel",
        "src 10.1.0.0/16 dst 10.2.9.0/24 proto tcp dport 22 ",
        "\tdir out action block priority 5 ",
        "src 10.1.0.0/16 dst 10.2.0.0/16 ",
        "\tdir out priority 10 ",
        "\ttmpl src 192.0.2.1 dst 192.0.2.2",
        "\t\tproto esp reqid 1 mode tunnel",
    ]


def test_flush_and_delete():
    x = load(*GW, "xfrm state flush", "xfrm policy delete src 10.1.0.0/16 dst 10.2.0.0/16 dir out")
    assert x.states == [] and len(x.policies) == 2


def test_policy_update_replaces_the_policy_of_the_same_selector_and_dir():
    """`ip xfrm policy update` (XFRM_MSG_UPDPOLICY, excl=0): a rekey moves the policy to the new SA's
    reqid in place, keeping its index; `add` of the same selector and dir stays -EEXIST, and an
    update of a selector not there yet inserts it."""
    x = load(*GW)
    out = xfrm_lookup(x, AF_INET, "10.1.0.5", "10.2.0.7", 17, 1, 2, XFRM_POLICY_OUT, count=False)
    index, n = out.index, len(x.policies)
    x = load(*GW, "xfrm policy update src 10.1.0.0/16 dst 10.2.0.0/16 dir out priority 10 "
                  "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 3 mode tunnel")  # fmt: skip
    new = xfrm_lookup(x, AF_INET, "10.1.0.5", "10.2.0.7", 17, 1, 2, XFRM_POLICY_OUT, count=False)
    assert (new.tmpls[0].reqid, new.index, len(x.policies)) == (3, index, n)
    with pytest.raises(ConfigError, match="File exists"):
        load(*GW, GW[2])
    x = load(*GW, "xfrm policy update src 10.3.0.0/16 dst 10.2.0.0/16 dir out "
                  "tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 1 mode tunnel")  # fmt: skip
    assert len(x.policies) == n + 1


def test_state_find_takes_the_newest_of_the_sas_a_template_matches():
    """A rekey with the same reqid: the SA added last carries the traffic (xfrm_state_look_at prefers
    the latest add_time); a soft-expired (dying) one yields to one that is not."""
    newer = GW[0].replace("spi 0x100", "spi 0x101").replace("11" * 20, "33" * 20)
    x = load(GW[0], newer, GW[2])
    tmpl = x.policies[0].tmpls[0]
    assert xfrm_state_find(x, tmpl).spi == 0x101
    x.states[1].soft_expired = True
    assert xfrm_state_find(x, tmpl).spi == 0x100


def test_state_update_changes_limits_of_an_existing_sa_and_needs_one():
    x = load(GW[0], GW[0].replace("add", "update", 1) + " limit packet-hard 50")
    assert len(x.states) == 1 and x.states[0].lft.hard_packet_limit == 50
    assert int(x.tab.hard_packets[x.states[0].index]) == 50
    with pytest.raises(ConfigError, match="No such process"):
        load(GW[0].replace("add", "update", 1))

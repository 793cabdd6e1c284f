"""nf_flow_nat_ip (one checksum update per header) writes the same bytes as nf_flow_nat (Linux's
field-by-field csum_replace4/2 and inet_proto_csum_replace4/2), including the 0 / 0xFFFF edges."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpath.flowtable.ip import nf_flow_nat, nf_flow_nat_ip
from flowpath.flowtable.key import F_DNAT, F_SNAT, V_NAT_ADDRS, V_NAT_PORTS, VAL_ROW, nat_addrs_word
from flowpath.packet.layout import IPH, IPPROTO_TCP, IPPROTO_UDP, TCPH, UDPH

NH, TH = 14, 34
u16 = st.one_of(st.sampled_from([0, 1, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
u32 = st.one_of(st.sampled_from([0, 0xFFFFFFFF, 0xFFFF0000, 0x0000FFFF]), st.integers(0, 0xFFFFFFFF))


@settings(max_examples=400, deadline=None)
@given(l4=st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]), flags=st.sampled_from([0, F_SNAT, F_DNAT, F_SNAT | F_DNAT]),
       dir_=st.sampled_from([0, 1]), ipcheck=u16, l4check=u16, saddr=u32, daddr=u32, sport=u16, dport=u16,
       nsaddr=u32, ndaddr=u32, nsport=u16, ndport=u16, to_zero=st.booleans())  # fmt: skip
def test_nf_flow_nat_ip_equals_field_by_field(l4, flags, dir_, ipcheck, l4check, saddr, daddr, sport, dport, nsaddr,
                                              ndaddr, nsport, ndport, to_zero):  # fmt: skip
    """RFC 1624 eq. 3 summed over fields equals the same updates one by one (csum_fold depends
    only on its argument mod 0xFFFF and on it being 0; RFC 768: a zero UDP checksum stays zero, a
    zero result is sent as 0xFFFF). to_zero picks the L4 checksum whose update folds to zero."""
    if to_zero:
        src = (flags & F_SNAT and dir_ == 0) or (flags & F_DNAT and dir_ == 1)
        dst = (flags & F_SNAT and dir_ == 1) or (flags & F_DNAT and dir_ == 0)
        changes = (
            [(saddr >> 16, nsaddr >> 16), (saddr & 0xFFFF, nsaddr & 0xFFFF), (sport, nsport)] if src else []
        )
        changes += (
            [(daddr >> 16, ndaddr >> 16), (daddr & 0xFFFF, ndaddr & 0xFFFF), (dport, ndport)] if dst else []
        )
        terms = sum((0xFFFF - old) + new for old, new in changes)
        l4check = terms % 0xFFFF or 0xFFFF  # ~check + terms == 0 (mod 0xFFFF): the result folds to 0
    f = np.zeros(TH + 20, np.uint8)
    f[NH + IPH.check : NH + IPH.check + 2] = (ipcheck >> 8, ipcheck & 0xFF)
    f[NH + IPH.saddr : NH + IPH.saddr + 4] = np.frombuffer(saddr.to_bytes(4, "big"), np.uint8)
    f[NH + IPH.daddr : NH + IPH.daddr + 4] = np.frombuffer(daddr.to_bytes(4, "big"), np.uint8)
    f[TH : TH + 4] = np.frombuffer(((sport << 16) | dport).to_bytes(4, "big"), np.uint8)
    coff = TH + (TCPH.check if l4 == IPPROTO_TCP else UDPH.check)
    f[coff : coff + 2] = (l4check >> 8, l4check & 0xFF)
    val = np.zeros((1, VAL_ROW), np.int64)
    val[0, V_NAT_ADDRS], val[0, V_NAT_PORTS] = nat_addrs_word(nsaddr, ndaddr), (nsport << 16) | ndport
    want, got = f.copy(), f.copy()
    nf_flow_nat(want, NH, TH, 4, l4, flags, dir_, val, np.zeros(32, np.uint8), 0)
    nf_flow_nat_ip(got, NH, TH, l4, flags, dir_, val, 0)
    assert want.tobytes() == got.tobytes()

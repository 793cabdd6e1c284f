"""nft `ipsec in|out` expression and the secpath / route xfrm tests: `meta ipsec`, `rt ipsec`.

Linux: net/netfilter/nft_xfrm.c (nft_xfrm_get_eval_in reads the skb's secpath, nft_xfrm_get_eval_out
walks the output route's xfrm bundle; nft_xfrm_state_get_key), nft_meta.c › NFT_META_SECPATH
(secpath_exists) and nft_rt.c › NFT_RT_XFRM (whether skb_dst has an xfrm).

flowpath's secpath is skb.meta["sp"], the SAs that decrypted the packet, outermost first (xfrm4_rcv
and the fast path's ESP input set it). The output route's xfrm is the SA xfrm_dst_lookup chose for
the packet (pkt.xfrm, given at FORWARD, OUTPUT and POSTROUTING); flowpath builds one-SA bundles.
The compiled VM runs `meta ipsec` (nft_vm.py › META_SECPATH, from pktmeta's PM_SECPATH); it has no
SAs, so rules with `ipsec` or `rt ipsec` are punted to these closures.
"""

from __future__ import annotations

from flowpath.config.nft.evaluate_fib import XFRM_MAX_DEPTH
from flowpath.netfilter import constants as C
from flowpath.netfilter.nft_types import NftBuildError


def secpath_exists(pkt) -> int:
    """NFT_META_SECPATH: 1 when the packet was decrypted by an SA of this host."""
    return int(bool(pkt.skb.meta.get("sp")))


def rt_xfrm(pkt) -> int | None:
    """NFT_RT_XFRM: whether the packet's route encrypts; no route yet (PREROUTING): NFT_BREAK.

    Deviation: Linux may give a PREROUTING packet a route by early demux (local sockets); flowpath has none.
    """
    if pkt.hooknum == C.NF_INET_PRE_ROUTING:
        return None
    return int(pkt.xfrm is not None)


def _state_key(x, key: str, family: str | None):
    """nft_xfrm_state_get_key; an address of the other family is NFT_BREAK (xfrm_state_addr_ok)."""
    if key == "reqid":
        return x.reqid
    if key == "spi":
        return x.spi
    if (x.daddr.version == 6) != (family == "ip6"):
        return None
    return int(x.saddr if key == "saddr" else x.daddr)


def build_xfrm(arg: dict):
    """(fn, dtype, bits) of {"ipsec": {"key", "dir", "spnum", "family"}}."""
    key, dir_, spnum, family = arg.get("key"), arg.get("dir"), arg.get("spnum", 0), arg.get("family")
    if key not in ("reqid", "spi", "saddr", "daddr") or dir_ not in ("in", "out"):
        raise NftBuildError(f"unsupported ipsec expression {arg!r}")
    if not isinstance(spnum, int) or not 0 <= spnum < XFRM_MAX_DEPTH:
        raise NftBuildError(f"ipsec spnum {spnum!r} out of range")
    if key in ("saddr", "daddr"):
        if family not in ("ip", "ip6"):
            raise NftBuildError(f"ipsec {key} needs family ip or ip6, got {family!r}")
        dtype, bits = ("ipv6_addr", 128) if family == "ip6" else ("ipv4_addr", 32)
    else:
        dtype, bits = "integer", 32

    if dir_ == "in":

        def load_in(pkt):
            sp = pkt.skb.meta.get("sp") or ()
            if len(sp) <= spnum:
                return None
            return _state_key(sp[spnum], key, family)

        return load_in, dtype, bits

    def load_out(pkt):
        # the bundle holds one SA: spnum 0 is it, deeper ones are not there
        if pkt.xfrm is None or spnum > 0:
            return None
        return _state_key(pkt.xfrm, key, family)

    return load_out, dtype, bits

"""ECN across a tunnel: the outer ECN field on encapsulation, the inner one on decapsulation (RFC 6040).

Linux: include/net/inet_ecn.h › INET_ECN_encapsulate, __INET_ECN_decapsulate, INET_ECN_decapsulate,
IP_ECN_set_ce, IP_ECN_set_ect1, IP6_ECN_set_ce, IP6_ECN_set_ect1; include/net/ip_tunnels.h ›
ip_tunnel_ecn_encap.
"""

from __future__ import annotations

# One truth for both paths: the flowtable's IPIP pop and push call the same @njit helpers.
from flowpath.packet.iptunnel import (  # noqa: F401 -- this module's names for the classic path
    ECN_DECAP_DROP,
    ECN_DECAP_LOG,
    ECN_DECAP_OK,
    INET_ECN_CE,
    INET_ECN_ECT_0,
    INET_ECN_ECT_1,
    INET_ECN_MASK,
    INET_ECN_NOT_ECT,
    INET_ECN_encapsulate,
    ecn_decapsulate,
    ip6_ecn_set,
    ip_ecn_set,
)

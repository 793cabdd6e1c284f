"""The conntrack table's row layout: what one connection's packets read and write.

Linux: include/net/netfilter/nf_conntrack.h (struct nf_conn), nf_conntrack_acct.h,
include/net/netfilter/nf_conntrack_tcp.h (struct ip_ct_tcp, ip_ct_tcp_state) and
nf_conntrack_proto_udp's stream timestamp. Linux keeps them in one struct per connection; here they
are the columns of one int64 row of `hot` (int64[cap, CT_HOT_ROW], 256 bytes a connection), so the
compiled classic path and the Python one read and write the same words. The tuples live apart, in the
flowtable key layout (flowpath/flowtable/key.py), one key row per direction.
"""

from __future__ import annotations

CT_STATUS = 0  # IPS_* bits
CT_TIMEOUT = 1  # absolute expiry, ns of packet time (Linux: ct->timeout, jiffies)
CT_MARK = 2
CT_PACKETS = 3  # + dir (nf_conn_acct)
CT_BYTES = 5  # + dir
CT_ZONE = 7
CT_PROTO = 8  # union nf_conntrack_proto: CT_PROTO_WORDS words
CT_PROTO_WORDS = 24
CT_HOT_ROW = CT_PROTO + CT_PROTO_WORDS

# struct ip_ct_tcp (offsets from CT_PROTO)
TCP_STATE = 0
TCP_LAST_DIR = 1
TCP_LAST_INDEX = 2
TCP_LAST_SEQ = 3
TCP_LAST_ACK = 4
TCP_LAST_END = 5
TCP_LAST_WIN = 6
TCP_LAST_WSCALE = 7
TCP_LAST_FLAGS = 8
TCP_RETRANS = 9
TCP_SEEN = 10  # + TCP_SEEN_WORDS * dir: struct ip_ct_tcp_state of that direction's sender
TCP_SEEN_WORDS = 6
TD_END, TD_MAXEND, TD_MAXWIN, TD_MAXACK, TD_SCALE, TD_FLAGS = range(6)
# struct nf_ct_udp
UDP_STREAM_TS = 0

assert TCP_SEEN + 2 * TCP_SEEN_WORDS <= CT_PROTO_WORDS

# struct nf_tcp_net: the TCP tracker's per-namespace sysctls, as the int64 `params` vector the compiled
# tracker reads (conntrack_proto_tcp.tcp_params builds it once per namespace)
TCP_CONNTRACK_TIMEOUT_MAX = 14  # enum tcp_conntrack up to TCP_CONNTRACK_UNACK, + 1
TCP_P_TIMEOUTS = 0  # + enum tcp_conntrack: that state's timeout, ns (nf_tcp_net.timeouts)
TCP_P_LOOSE = TCP_P_TIMEOUTS + TCP_CONNTRACK_TIMEOUT_MAX  # nf_conntrack_tcp_loose
TCP_P_BE_LIBERAL = TCP_P_LOOSE + 1  # nf_conntrack_tcp_be_liberal
TCP_P_IGNORE_INVALID_RST = TCP_P_LOOSE + 2  # nf_conntrack_tcp_ignore_invalid_rst
TCP_P_MAX_RETRANS = TCP_P_LOOSE + 3  # nf_conntrack_tcp_max_retrans
TCP_PARAMS = TCP_P_LOOSE + 4

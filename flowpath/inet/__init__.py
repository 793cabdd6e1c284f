"""The classic IPv4/IPv6 path: receive, forward, output, ICMP, ARP/ND (net/ipv4, net/ipv6)."""

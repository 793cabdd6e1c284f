"""Netfilter: ruleset evaluation on hooks, conntrack and NAT."""

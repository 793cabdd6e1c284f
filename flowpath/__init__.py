"""flowpath: a software IPsec and tunnel gateway with a netfilter-style flowtable fast path."""

__version__ = "0.1.0"

"""Moved to flowpath.packet.counters (the compiled early ingress counts with it); kept for imports on
branches that predate the move."""

from flowpath.packet.counters import RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS, Stats, account_batch

__all__ = ["RX_BYTES", "RX_PACKETS", "TX_BYTES", "TX_PACKETS", "Stats", "account_batch"]

"""Packets: header layouts, checksums, batches, the slow path's per-packet view."""

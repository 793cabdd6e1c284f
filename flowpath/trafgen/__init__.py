"""Traffic generator: streams, field engine, IMIX, the payload signature, rx statistics.

No Linux counterpart (Linux has pktgen, net/core/pktgen.c; the field engine follows TRex's VM).
"""

from flowpath.trafgen.field import FieldVar
from flowpath.trafgen.imix import IMIX, frame_sizes, imix_pattern
from flowpath.trafgen.inject import ChainResult, Hop, inject
from flowpath.trafgen.profile import Profile, load_profile, profile_from_dict, write_frames_pcap
from flowpath.trafgen.rxstats import SCHEMA_VERSION, rx_stats, rx_stats_captures, sequence_stats
from flowpath.trafgen.signature import FP_SIG, SIG_MAGIC, sig_find
from flowpath.trafgen.stream import Frames, Rate, Stream, build_stream

__all__ = [
    "FP_SIG", "IMIX", "SCHEMA_VERSION", "SIG_MAGIC", "ChainResult", "FieldVar", "Frames", "Hop", "Profile",
    "Rate", "Stream", "build_stream", "frame_sizes", "imix_pattern", "inject", "load_profile",
    "profile_from_dict", "rx_stats", "rx_stats_captures", "sequence_stats", "sig_find", "write_frames_pcap",
]  # fmt: skip

"""Listing options: what `nft -s` and `nft -p` change in the text and JSON listings.

Linux: nftables include/nftables.h › NFT_CTX_OUTPUT_STATELESS (counters and quotas without what they
counted) and NFT_CTX_OUTPUT_NUMERIC_PROTO (layer 4 protocols as numbers), which nft-test.py sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

STATELESS: ContextVar[bool] = ContextVar("stateless", default=False)
NUMERIC_PROTO: ContextVar[bool] = ContextVar("numeric_proto", default=False)


@contextmanager
def output_options(stateless: bool = False, numeric_proto: bool = False) -> Iterator[None]:
    """Listings (text or JSON) made inside are `nft -s` (`stateless`) and `nft -p` (`numeric_proto`) ones."""
    tokens = (STATELESS.set(stateless), NUMERIC_PROTO.set(numeric_proto))
    try:
        yield
    finally:
        STATELESS.reset(tokens[0])
        NUMERIC_PROTO.reset(tokens[1])

"""Interval set elements: sort, merge and split back into values, prefixes and ranges.

Linux: nftables src/segtree.c › set_to_intervals (merge when auto-merge or anonymous, refuse overlaps
otherwise) and interval_map_decompose (a single value, a prefix when the interval is aligned, else a range).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowpath.config.nft import datatype as dt


def is_interval_elem(v: Any) -> bool:
    return isinstance(v, dict) and ("range" in v or "prefix" in v)


def elem_bounds(dtype: str, v: Any) -> tuple[int, int]:
    """[lo, hi] integers covered by one JSON element."""
    if isinstance(v, dict) and "range" in v:
        return dt.value_num(dtype, v["range"][0]), dt.value_num(dtype, v["range"][1])
    if isinstance(v, dict) and "prefix" in v:
        width = dt.type_width(dtype)
        lo = dt.value_num(dtype, v["prefix"]["addr"])
        return lo, lo + (1 << (width - v["prefix"]["len"])) - 1
    n = dt.value_num(dtype, v)
    return n, n


def _decompose(dtype: str, lo: int, hi: int) -> Any:
    if lo == hi:
        return dt.num_value(dtype, lo)
    size = hi - lo + 1
    width = dt.type_width(dtype)
    if dt.prefix_ok(dtype) and size & (size - 1) == 0 and lo % size == 0:
        return {"prefix": {"addr": dt.num_value(dtype, lo), "len": width - size.bit_length() + 1}}
    return {"range": [dt.num_value(dtype, lo), dt.num_value(dtype, hi)]}


def interval_elems(dtype: str, values: list[Any], merge: bool, err: Callable[[str], Exception]) -> list:
    """Sorted, optionally merged interval elements in the JSON form nft lists."""
    spans = sorted(elem_bounds(dtype, v) for v in values)
    out: list[list[int]] = []
    for lo, hi in spans:
        if out and lo <= out[-1][1] + (1 if merge else 0):
            if not merge:
                if (lo, hi) == tuple(out[-1]):
                    continue  # the same element twice is not a conflict
                raise err("conflicting intervals specified")
            out[-1][1] = max(out[-1][1], hi)
            continue
        out.append([lo, hi])
    return [_decompose(dtype, lo, hi) for lo, hi in out]

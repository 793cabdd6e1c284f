"""flowpath: a software IPsec and tunnel gateway with a netfilter-style flowtable fast path."""

__version__ = "0.1.0"

# Before any kernel is defined: numba's cache goes to a directory keyed on the sources and library
# versions (flowpath/numba_cache.py), so an edit in one module never leaves stale machine code behind.
from flowpath import numba_cache as _numba_cache  # noqa: E402

_numba_cache.configure()

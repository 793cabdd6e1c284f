"""A statement's state as one row of a ruleset-wide int64 array (counters, limits).

No Linux counterpart as such (the kernel keeps each expression's state in its private area, which its
one evaluator reads): here two evaluators, the closures and the compiled VM, must see one state, so
nft_compile.compile_chains binds each object to its row of the array the programs carry.
"""

from __future__ import annotations

import numpy as np


class NftCells:
    """One row of state: an array of its own until bind() moves it (its values kept) into the
    ruleset's array at `row`."""

    __slots__ = ("_cells", "_row")

    def __init__(self, values: list[int]):
        self._cells = np.array([values], np.int64)
        self._row = 0

    def bind(self, cells: np.ndarray, row: int) -> None:
        cells[row] = self._cells[self._row]
        self._cells, self._row = cells, row

    @property
    def row(self) -> int:
        return self._row

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the shared `topology` helpers (importlib import mode)

from topology import topology  # noqa: E402

from flowpath.testbed.gateway import KINDS  # noqa: E402

DATA_SIZE = 20 << 20  # bytes each TCP transfer carries


@pytest.fixture(scope="module", params=KINDS)
def topo(request):
    """h1 -- gw -- h2 with each kind of gateway, shared by a module's tests (they leave it as found)."""
    with topology(request.param) as t:
        yield t


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """DATA_SIZE random bytes (incompressible, so a corrupted segment cannot hide)."""
    path = tmp_path_factory.mktemp("live") / "data.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(DATA_SIZE))
    return path

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the shared `esp_testbed` helpers (importlib import mode)

from esp_testbed import DATA_SIZE, bring_up  # noqa: E402

from flowpath.testbed import sites  # noqa: E402


@pytest.fixture(scope="module")
def testbed():
    """sunset -- west ==ESP== east -- sunrise, shared by a module's tests; torn down at the end."""
    tb = bring_up()
    try:
        yield tb
    finally:
        sites.down(tb.prefix, say=lambda _: None)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """DATA_SIZE random bytes (incompressible, so a corrupted segment cannot hide)."""
    path = tmp_path_factory.mktemp("esp") / "data.bin"
    path.write_bytes(os.urandom(DATA_SIZE))
    return path

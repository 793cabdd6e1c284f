import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ct_helpers (importlib import mode)


@pytest.fixture
def ctt():
    from flowpath.netfilter.conntrack import Conntrack

    return Conntrack()

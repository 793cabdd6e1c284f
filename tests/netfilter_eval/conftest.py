"""Make nfeval_util importable and share its fixtures with this directory's tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nfeval_util import netns  # noqa: E402, F401  (a fixture)

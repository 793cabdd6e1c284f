"""`python -m flowpath ARGS`: the `flowpath` command of this source tree."""

import sys

from flowpath.cli import main

sys.exit(main())

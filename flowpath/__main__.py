"""`python -m flowpath ARGS`: the `flowpath` command of this source tree."""

from flowpath.cli import console_main

console_main()

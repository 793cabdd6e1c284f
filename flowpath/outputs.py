"""Output paths checked before the work that fills them.

No Linux counterpart. A command that forwards a capture or runs a benchmark for minutes must not
find out at the end that it cannot write its results: these checks run first and raise a UsageError
(exit 2) of one line naming the option and the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flowpath.errors import UsageError


def check_writable(path: Path, option: str) -> None:
    """UsageError unless the file `path` can be opened for writing.

    A try, not os.access: root passes every permission check but still cannot write to a read-only
    file system or below a file. An existing file is opened for appending (nothing changes); a new
    one is created and removed again.
    """
    path = Path(path)
    try:
        if path.exists() or path.is_symlink():
            with open(path, "ab"):
                pass
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(path)
    except OSError as e:
        raise UsageError(f"{option}: cannot write {path}: {e.strerror or e}") from None


def make_output_dir(path: Path, option: str) -> None:
    """Create the directory `path` (and its parents) if needed; UsageError unless files can be
    created in it."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"{option}: cannot write {path}: {e.strerror or e}") from None


def write_private(path, text: str) -> None:
    """Write a file only its owner can read (0600 from the moment it exists): network files with
    `ip xfrm` keys, testbed configs."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)

"""`include "NAME"`: the files a name stands for, in the order nft reads them.

Linux: nftables src/scanner.l › scanner_include_file, include_glob and search_in_include_path: an
absolute name is read as it is; a name starting with ./ or ../ is relative; any other name is looked up
in the include paths (`nft -I DIR`, /etc by default). A name with a glob pattern (* ? [) may match
nothing; each pattern's matches are read in sorted order, directories skipped. Includes nest at most
MAX_INCLUDE_DEPTH deep.

Deviations: nft reads a ./ or ../ name relative to its working directory, flowpath relative to the
including file's folder (a gateway's ruleset should not depend on where the daemon was started), and
flowpath looks a plain name up in the including file's folder, then in the top file's, then in the
include paths, as `nft -I FOLDER` would find it.
"""

from __future__ import annotations

import errno
import glob
import os

MAX_INCLUDE_DEPTH = 16  # src/scanner.l
INCLUDE_PATH = ("/etc",)  # DEFAULT_INCLUDE_PATH, as Debian builds nftables (sysconfdir)


def is_wildcard(name: str) -> bool:
    return any(c in name for c in "*?[")


def include_files(name: str, including: str, include_path: tuple[str, ...] = INCLUDE_PATH) -> list[str]:
    """The files `include "name"` in file `including` reads, in order; a plain name is looked up in
    the including file's folder, then in each of `include_path`.

    Raises FileNotFoundError ("File not found", as nft says it) when a name without a pattern names no
    file.
    """
    here = os.path.dirname(including)
    if "\0" in name:  # no path holds a NUL: it names no file (and the OS calls refuse it)
        candidates = []
    elif os.path.isabs(name):
        candidates = [name]
    elif name.startswith(("./", "../")):
        candidates = [os.path.join(here, name)]
    else:
        candidates = [os.path.join(d, name) for d in (here or ".", *include_path)]
    out: list[str] = []
    for c in candidates:
        if is_wildcard(name):
            out += [f for f in sorted(glob.glob(c)) if not os.path.isdir(f) and f not in out]
        elif os.path.isfile(c):
            return [c]
    if not out and not is_wildcard(name):
        raise FileNotFoundError(errno.ENOENT, "File not found", name)
    return out

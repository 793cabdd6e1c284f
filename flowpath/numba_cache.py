"""numba's on-disk cache, in a directory per version of everything the kernels are built from.

No Linux counterpart. numba keys a cached kernel on its own source file's timestamp only: after an
edit of a constant or an inlined helper in another module (packet/layout.py, packet/reason.py,
packet/csum.py...), the old machine code would load silently. `import flowpath` therefore points
NUMBA_CACHE_DIR at a directory named by a hash of every flowpath/**/*.py file's contents and of
the Python, numba, llvmlite and numpy versions: any change of them is a new, empty cache.

- default: $XDG_CACHE_HOME/flowpath/numba/<key> (~/.cache/...), or a temporary directory's
  flowpath-<uid>/numba/<key> when that cannot be written;
- NUMBA_CACHE_DIR set by the user: $NUMBA_CACHE_DIR/flowpath/<key>;
- NUMBA_CACHE_DIR set by an earlier `import flowpath` (a child process inherits it): its parent.

Importing this module reads the sources and sets the two environment variables, nothing more (no
directory is made; numba makes it when it first writes). `prune()`, which the CLI calls, removes
the directories of other keys once several newer ones exist.
"""

from __future__ import annotations

import os
import sys
import time

try:  # hashlib loads OpenSSL (2-3 ms); the builtin module alone takes 0.2
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import blake2b

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
OWN = "_FLOWPATH_NUMBA_CACHE_DIR"  # the value an earlier import gave NUMBA_CACHE_DIR
KEY_LEN = 32  # hex digits
# The libraries whose versions the machine code depends on, with the file that carries the version.
LIBRARIES = (("numba", "_version.py"), ("llvmlite", "_version.py"), ("numpy", "version.py"))
KEEP = 4  # prune(): directories of other keys kept, the most recently used
GRACE_S = 3600  # prune(): a directory used in the last hour is kept (a process may still compile into it)


def _library_versions(h) -> None:
    """Each library's version file (or, without one, its __init__.py's size and mtime), found without
    importing the library: numba alone takes half a second to import."""
    from importlib.machinery import PathFinder

    for name, version_file in LIBRARIES:
        spec = PathFinder.find_spec(name)
        h.update(f"\0{name}\0".encode())
        if spec is None or not spec.origin:
            continue
        folder = os.path.dirname(spec.origin)
        try:
            with open(os.path.join(folder, version_file), "rb") as f:
                h.update(f.read())
        except OSError:
            st = os.stat(spec.origin)
            h.update(f"{st.st_size} {st.st_mtime_ns}".encode())


def source_key(package_dir: str = PACKAGE_DIR) -> str:
    """Hash of the package's *.py files (relative path and contents, in sorted order), the Python
    version and the libraries' versions; KEY_LEN hex digits."""
    h = blake2b(digest_size=KEY_LEN // 2)
    h.update(sys.version.encode())
    _library_versions(h)
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(package_dir, rel)) as it:
            entries = sorted((e.name, e.is_dir()) for e in it)
        for name, is_dir in entries:
            path = os.path.join(rel, name)
            if is_dir:
                if name != "__pycache__":
                    stack.append(path)
            elif name.endswith(".py"):
                with open(os.path.join(package_dir, path), "rb") as f:
                    data = f.read()
                h.update(f"\0{path}\0{len(data)}\0".encode())
                h.update(data)
    return h.hexdigest()


def _writable(path: str) -> bool:
    """Whether `path` could be created: its nearest existing ancestor is a writable directory."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def cache_dir(key: str, environ=os.environ) -> str:
    """The directory numba should cache the kernels of `key` in (see the module docstring)."""
    given = environ.get("NUMBA_CACHE_DIR")
    if given and given == environ.get(OWN):
        return os.path.join(os.path.dirname(given), key)
    if given:
        return os.path.join(given, "flowpath", key)
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "flowpath", "numba", key)
    if os.path.isabs(path) and _writable(path):
        return path
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"flowpath-{uid}", "numba", key)


def configure(environ=os.environ) -> str:
    """Point NUMBA_CACHE_DIR at this source tree's cache directory; return it.

    numba reads the variable when it is imported and again before each compile; a function is
    given its cache directory when it is decorated, so this must run before any flowpath kernel is
    defined (flowpath/__init__.py does it). If numba was imported first, its configuration is
    re-read now.
    """
    path = cache_dir(source_key(), environ)
    environ["NUMBA_CACHE_DIR"] = environ[OWN] = path
    if "numba.core.config" in sys.modules:
        sys.modules["numba.core.config"].reload_config()
    return path


def prune(current: str | None = None, keep: int = KEEP, grace_s: float = GRACE_S) -> list[str]:
    """Mark `current` (default: NUMBA_CACHE_DIR as configured) as used, and remove the directories
    of other keys beside it, except the `keep` most recently used and any used within `grace_s`.

    Only directories named like a key are touched. Returns the directories removed.
    """
    import shutil

    current = current or os.environ.get(OWN)
    if not current:
        return []
    parent, now = os.path.dirname(current), time.time()
    try:
        if os.path.isdir(current):
            os.utime(current)
        with os.scandir(parent) as it:
            others = [(e.stat().st_mtime, e.path) for e in it if e.path != current and _is_key_dir(e)]
    except OSError:
        return []
    removed = []
    for mtime, path in sorted(others, reverse=True)[keep:]:
        if now - mtime > grace_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def has_kernels(path: str | None = None) -> bool:
    """Whether numba has cached any kernel in `path` (default: NUMBA_CACHE_DIR as configured): an
    index file (*.nbi) in it or in one of its per-module folders. False means the next compile is the
    first of this source tree (a fresh install or upgrade, or an edit)."""
    path = path or os.environ.get(OWN)
    if not path:
        return False
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.name.endswith(".nbi"):
                        return True
                    if e.is_dir():
                        stack.append(e.path)
        except OSError:
            continue
    return False


def _is_key_dir(entry: os.DirEntry) -> bool:
    name = entry.name
    return len(name) == KEY_LEN and all(c in "0123456789abcdef" for c in name) and entry.is_dir()

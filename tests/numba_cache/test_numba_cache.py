"""flowpath/numba_cache.py: numba's cache in a directory per hash of the sources and library versions.

numba keys a cached kernel on its own file's timestamp (numba/core/caching.py › _CacheImpl, the
index's source stamp), so an edit of a constant another module inlines left old machine code
running: these tests pin that an edit gives another directory, that numba uses it, and that a
kernel whose own file did not change is compiled again after such an edit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowpath import numba_cache
from flowpath.numba_cache import OWN, cache_dir, configure, prune, source_key

ROOT = Path(__file__).resolve().parents[2]
KEY = "0123456789abcdef" * 2


def _copy_package(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(ROOT / "flowpath", dst / "flowpath", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_key_follows_the_contents_of_every_module(tmp_path):
    src = _copy_package(tmp_path)
    pkg = str(src / "flowpath")
    key = source_key(pkg)
    assert key == source_key(str(ROOT / "flowpath")) and len(key) == 32  # contents, not place or mtime
    layout = src / "flowpath" / "packet" / "layout.py"
    layout.write_text(layout.read_text() + "\n# an edit\n")
    edited = source_key(pkg)
    assert edited != key
    (src / "flowpath" / "packet" / "extra.py").write_text("X = 1\n")
    added = source_key(pkg)
    assert added not in (key, edited)
    (src / "flowpath" / "notes.txt").write_text("not Python")
    assert source_key(pkg) == added


def test_key_covers_the_library_versions(monkeypatch):
    key = source_key()
    monkeypatch.setattr(numba_cache, "LIBRARIES", (("numba", "__init__.py"), *numba_cache.LIBRARIES[1:]))
    assert source_key() != key


def test_directory_rules(tmp_path):
    xdg = {"XDG_CACHE_HOME": str(tmp_path)}
    assert cache_dir(KEY, xdg) == str(tmp_path / "flowpath" / "numba" / KEY)
    # the user's NUMBA_CACHE_DIR is kept, with a subdirectory per key
    assert cache_dir(KEY, {"NUMBA_CACHE_DIR": "/x"}) == f"/x/flowpath/{KEY}"
    # set by an earlier import (a parent process, maybe another source tree): the key's sibling
    own = str(tmp_path / "flowpath" / "numba" / ("f" * 32))
    assert cache_dir(KEY, {"NUMBA_CACHE_DIR": own, OWN: own}) == str(tmp_path / "flowpath" / "numba" / KEY)
    # a child given another NUMBA_CACHE_DIR (bench's fresh interpreters) uses that one
    assert cache_dir(KEY, {"NUMBA_CACHE_DIR": "/y", OWN: own}) == f"/y/flowpath/{KEY}"
    # an unwritable cache home: a temporary directory
    (tmp_path / "afile").write_text("")
    fallback = cache_dir(KEY, {"XDG_CACHE_HOME": str(tmp_path / "afile")})
    assert fallback.startswith(tempfile.gettempdir()) and fallback.endswith(f"/numba/{KEY}")


def test_configure_sets_the_variables_and_makes_no_directory(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    path = configure(env)
    assert env["NUMBA_CACHE_DIR"] == env[OWN] == path == str(tmp_path / "flowpath" / "numba" / source_key())
    assert configure(env) == path  # idempotent
    assert list(tmp_path.iterdir()) == []


def _python(code: str, env: dict, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in env.items() if k != "NUMBA_DISABLE_JIT"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", OWN)}
    return {**env, **kw}


def test_import_sets_the_variable_without_numba(tmp_path):
    out = _python("import os, sys, flowpath; print(os.environ['NUMBA_CACHE_DIR'], 'numba' in sys.modules)",
                  _env(XDG_CACHE_HOME=str(tmp_path)))  # fmt: skip
    assert out.split() == [str(tmp_path / "flowpath" / "numba" / source_key()), "False"]
    assert list(tmp_path.iterdir()) == []


def test_kernels_are_cached_there_and_loaded_by_the_next_interpreter(tmp_path):
    """The user's NUMBA_CACHE_DIR, numba imported before flowpath (its configuration is re-read)."""
    env = _env(NUMBA_CACHE_DIR=str(tmp_path))
    code = "import numba, flowpath.packet.csum as c; print(c.csum_fold(0x1FFFF))"
    assert _python(code, env).strip() == "1"
    where = tmp_path / "flowpath" / source_key()
    assert list(where.rglob("csum.csum_fold-*.nbi")) and list(where.rglob("csum.csum_fold-*.nbc"))
    assert not list(tmp_path.glob("*.nbi"))
    out = _python(code.replace("import numba, ", "import "), {**env, "NUMBA_DEBUG_CACHE": "1"})
    assert "[cache] data loaded" in out and str(where) in out


def test_an_edit_in_another_module_recompiles_the_kernel(tmp_path):
    """The failure this module exists for: a kernel inlines a constant from another file; the constant
    changes and the kernel's file does not. numba's own key (the kernel file's stamp) would load the
    old machine code."""
    src = _copy_package(tmp_path)
    const = src / "flowpath" / "probe_const.py"
    const.write_text("LIMIT = 1\n")
    (src / "flowpath" / "probe_kernel.py").write_text(
        "from numba import njit\n\nfrom flowpath.probe_const import LIMIT\n\n\n"
        "@njit(cache=True)\ndef limit():\n    return LIMIT\n"
    )
    env = _env(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(src))
    code = "from flowpath.probe_kernel import limit; print(limit())"
    assert _python(code, env, cwd=src).strip() == "1"
    const.write_text("LIMIT = 2\n")
    assert _python(code, env, cwd=src).strip() == "2"
    assert len(list((tmp_path / "cache" / "flowpath" / "numba").iterdir())) == 2


def test_prune_keeps_the_current_the_recent_and_the_just_used(tmp_path):
    now = time.time()
    dirs = {}
    for k, age_h in enumerate([0, 2, 3, 4, 5, 6, 7]):
        d = tmp_path / (f"{k:x}" * 32)
        d.mkdir()
        os.utime(d, (now - age_h * 3600, now - age_h * 3600))
        dirs[k] = d
    other = tmp_path / "not-a-key"
    other.mkdir()
    os.utime(other, (now - 10**7, now - 10**7))
    current = dirs[6]  # the oldest, but ours: kept and marked as used
    removed = prune(str(current), keep=2, grace_s=3.5 * 3600)
    assert sorted(removed) == sorted(str(dirs[k]) for k in (3, 4, 5))  # beyond the 2 newest, unused 3.5 h
    assert current.is_dir() and current.stat().st_mtime >= now - 60
    assert other.is_dir() and all(dirs[k].is_dir() for k in (0, 1, 2))


def test_prune_without_a_directory_is_harmless(tmp_path):
    assert prune(str(tmp_path / "missing" / KEY)) == []


def test_each_command_prunes(monkeypatch):
    from flowpath.cli import main

    seen = []
    monkeypatch.setattr(numba_cache, "prune", lambda: seen.append(1) or [])
    assert main(["--version"]) == 0
    assert seen == [1]

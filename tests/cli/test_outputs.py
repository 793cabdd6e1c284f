"""flowpath.outputs: a path is tried, not judged by its mode bits, and the try leaves nothing behind."""

from __future__ import annotations

import pytest

from flowpath.errors import UsageError
from flowpath.outputs import check_writable, make_output_dir


def test_a_new_file_is_created_and_removed_again(tmp_path):
    check_writable(tmp_path / "r.json", "--json")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_keeps_its_bytes(tmp_path):
    f = tmp_path / "r.json"
    f.write_text("old")
    check_writable(f, "--json")
    assert f.read_text() == "old"


@pytest.mark.parametrize(("make", "reason"), [("dir", "Is a directory"), ("below-file", "Not a directory"),
                                              ("missing-parent", "No such file or directory")])  # fmt: skip
def test_unwritable_paths_name_the_option_path_and_reason(tmp_path, make, reason):
    (tmp_path / "f").write_text("")
    path = {"dir": tmp_path, "below-file": tmp_path / "f" / "x", "missing-parent": tmp_path / "a" / "x"}[make]
    with pytest.raises(UsageError, match=f"^--stats: cannot write {path}: {reason}$"):
        check_writable(path, "--stats")


def test_output_dir_is_made_with_its_parents(tmp_path):
    make_output_dir(tmp_path / "a" / "b", "--out-dir")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="Not a directory"):
        make_output_dir(tmp_path / "f", "--out-dir")


def test_write_private_leaves_a_file_only_its_owner_can_read(tmp_path):
    import stat

    from flowpath.outputs import write_private

    p = tmp_path / "keys.ip"
    p.write_text("old")
    p.chmod(0o644)  # an existing world-readable file is closed too
    write_private(p, "xfrm state add ...\n")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "xfrm state add ...\n"
    q = tmp_path / "new.ip"
    write_private(q, "x")
    assert stat.S_IMODE(q.stat().st_mode) == 0o600

"""README.md as a reader meets it: no names of documents outside the repository, and commands whose
outputs do not overwrite each other's."""

import re
import shlex
from pathlib import Path

import flowpath

REPO = Path(flowpath.__file__).parent.parent
README = (REPO / "README.md").read_text()
# where the package says what it is (help texts and docstrings a user reads)
USER_FACING = [REPO / "flowpath" / "cli.py", *sorted((REPO / "flowpath" / "bench").glob("*.py"))]


def test_no_seed_file_numbers_in_readme_or_help_texts():
    """The project's source documents are named by what they are ("the flowtable workshop slides"),
    never by the file number only its authors know."""
    for path in [REPO / "README.md", *USER_FACING]:
        text = path.read_text()
        assert not re.search(r"(?i)\bseed\s+0\d\d\b|\bseeds'|\bthe seeds?\b", text), path


def test_readme_links_only_to_files_in_the_repository():
    for name in re.findall(r"\b([A-Z]+\.md)\b", README):
        assert (REPO / name).is_file(), f"README names {name}, which is not in the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (REPO / target).exists(), target


OUTPUT_OPTIONS = ("--out-dir", "--out", "--stats", "--json", "--plot", "--dump-conntrack", "--dump-flowtable",
                  "--dump-xfrm")  # fmt: skip


def readme_commands() -> list[list[list[str]]]:
    """The `flowpath` command lines of each ```sh block of the README, split as the shell would."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    out = []
    for block in blocks:
        cmds = []
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["flowpath"]:
                    cmds.append(words[1:])
        out.append(cmds)
    return out


def written(cmd: list[str]) -> set[str]:
    """The top-level files and directories a command writes (out/stats.json -> out)."""
    roots = set()
    for opt, val in zip(cmd, cmd[1:], strict=False):
        if opt in OUTPUT_OPTIONS:
            path = val.partition("=")[2] if opt == "--out" and "=" in val else val
            roots.add(Path(path).parts[0])
    return roots


def test_readme_blocks_write_to_distinct_places():
    """A block run after another must not overwrite its outputs (the quick start's out/ stays as it
    left it)."""
    blocks = [set().union(*map(written, cmds)) for cmds in readme_commands()]
    for i, a in enumerate(blocks):
        for b in blocks[i + 1 :]:
            assert not a & b, f"two README blocks write {sorted(a & b)}"

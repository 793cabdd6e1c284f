"""README.md as a reader meets it: no names of documents outside the repository, and commands whose
outputs do not overwrite each other's."""

import re
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

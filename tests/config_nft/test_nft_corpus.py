"""The corpus against nft 1.0.6: listings, JSON, round trips and rejected files.

Linux: nftables src/rule.c (listing), src/json.c (JSON), src/parser_bison.y and src/evaluate.c (errors).
Expected outputs come from the real nft (live in a namespace when root, else the files regen.sh stored).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from flowpath.config.nft import load_ruleset, parse_ruleset, ruleset_from_json
from flowpath.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "data" / "nft"
CORPUS = sorted(DATA.glob("*.nft"))
INVALID = sorted((DATA / "invalid").glob("*.nft"))
LOADABLE = [p for p in CORPUS if p.with_name(p.name + ".list").exists()]


def have_nft() -> bool:
    return os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None


def norm_list(text: str) -> str:
    """Counter values are not compared (nft counts what the namespace saw)."""
    return re.sub(r"counter packets \d+ bytes \d+", "counter packets 0 bytes 0", text)


def norm_json(obj: dict) -> list:
    """`nft -j` objects without metainfo, handles and counter values."""
    out = []
    for item in obj["nftables"]:
        ((kind, body),) = item.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        if kind == "chain":
            body.pop("dev", None)  # flowpath writes a netdev chain's device; nft 1.0.6 does not
        if kind in ("table", "chain"):
            body.pop("comment", None)  # and their comments, which nft 1.0.6 leaves out
        if kind == "table":
            body.pop("flags", None)  # nft 1.0.6 writes the family there (json.py)
        if kind == "rule":
            body["expr"] = [
                {"counter": {"packets": 0, "bytes": 0}} if "counter" in s else s for s in body["expr"]
            ]
        out.append({kind: body})
    return out


def error_position(err_text: str) -> tuple[int, int]:
    """(line, col) of nft's first error line `file:line:col-col: Error: ...`."""
    m = re.search(r":(\d+):(\d+)(?:-\d+)?: Error:", err_text)
    assert m, err_text
    return int(m.group(1)), int(m.group(2))


class Netns:
    """A private network namespace to run nft in; deleted on close."""

    def __init__(self) -> None:
        self.name = f"fpnft_t{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)

    def nft(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", *args], capture_output=True, text=True
        )

    def load(self, path: Path) -> subprocess.CompletedProcess:
        """`nft -f path`, plain include names looked up in the file's folder (as regen.sh runs it)."""
        self.nft("flush", "ruleset")
        return self.nft("-I", str(path.parent), "-f", str(path))

    def listing(self) -> tuple[str, dict]:
        return self.nft("list", "ruleset").stdout, json.loads(self.nft("-j", "list", "ruleset").stdout)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


ids = [p.name for p in LOADABLE]


@pytest.fixture(scope="module")
def netns():
    if not have_nft():
        pytest.skip("needs root, ip and nft")
    try:
        ns = Netns()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot create a network namespace: {e}")
    if ns.nft("list", "ruleset").returncode != 0:
        ns.close()
        pytest.skip("nft cannot talk to nf_tables in a namespace here")
    yield ns
    ns.close()


@pytest.mark.root
@pytest.mark.parametrize("path", LOADABLE, ids=ids)
def test_listing_and_json_match_live_nft(netns, path):
    """flowpath's `list ruleset` and `-j list ruleset` equal nft's for the same file."""
    res = netns.load(path)
    assert res.returncode == 0, res.stderr
    text, obj = netns.listing()
    rs = load_ruleset(path)
    assert norm_list(rs.list()) == norm_list(text)
    assert norm_json(rs.to_json()) == norm_json(obj)


@pytest.mark.root
@pytest.mark.parametrize("path", LOADABLE, ids=ids)
def test_listing_with_handles_matches_live_nft_a(netns, path):
    """`list ruleset` with handles equals `nft -a list ruleset` (table handles count per namespace)."""
    assert netns.load(path).returncode == 0
    table_handle = re.compile(r"^(table .*) # handle \d+$", re.M)
    expected = table_handle.sub(r"\1", netns.nft("-a", "list", "ruleset").stdout)
    assert norm_list(table_handle.sub(r"\1", load_ruleset(path).list(handles=True))) == norm_list(expected)


@pytest.mark.root
def test_json_commands_as_live_nft_applies_them(netns):
    """insert, replace, delete and flush in libnftables JSON (`nft -j -f`), listed with handles."""
    path = DATA / "json_commands.json"
    netns.nft("flush", "ruleset")
    assert netns.nft("-j", "-f", str(path)).returncode == 0
    table_handle = re.compile(r"^(table .*) # handle \d+$", re.M)
    expected = table_handle.sub(r"\1", netns.nft("-a", "list", "ruleset").stdout)
    assert table_handle.sub(r"\1", load_ruleset(path).list(handles=True)) == expected


@pytest.mark.parametrize("path", LOADABLE, ids=ids)
def test_listing_and_json_match_stored_nft_output(path):
    """Same comparison against the outputs regen.sh stored from nft 1.0.6."""
    rs = load_ruleset(path)
    assert norm_list(rs.list()) == norm_list(path.with_name(path.name + ".list").read_text())
    stored = json.loads(path.with_name(path.name + ".json").read_text())
    assert norm_json(rs.to_json()) == norm_json(stored)


def handles(obj: dict) -> list[tuple[str, str, int]]:
    """(kind, name or chain, handle) of every object but tables (whose handles count per namespace)."""
    out = []
    for item in obj["nftables"]:
        ((kind, body),) = item.items()
        if kind not in ("metainfo", "table"):
            out.append((kind, body.get("name", body.get("chain")), body["handle"]))
    return out


@pytest.mark.parametrize("path", LOADABLE, ids=ids)
def test_handles_are_the_kernels(path):
    """Each chain, set and rule gets the handle the kernel gave it (nft -j shows them): a counter per
    table in the order of the batch nft sends, anonymous sets included, replace keeping its handle."""
    stored = json.loads(path.with_name(path.name + ".json").read_text())
    assert handles(load_ruleset(path).to_json()) == handles(stored)


def _json_lossy(text: str) -> str:
    """nft 1.0.6's JSON has no set auto-merge flag: drop it from a listing."""
    return text.replace("\t\tauto-merge\n", "")


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_listing_reparses_to_itself(path):
    """list -> parse -> list is a fixed point (nft accepts what it prints).

    One exception, as in nft: a merged anonymous set left with one element (`{ 2001:db8::/47 }`)
    reads back as a plain value, so the fixed point is reached after one more pass.
    """
    first = load_ruleset(path).list()
    second = parse_ruleset(first, "listing").list()
    assert parse_ruleset(second, "listing").list() == second
    if re.search(r"\{ [^,{}]+ \}", first) is None:
        assert second == first


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_json_round_trip(path):
    """to_json -> load -> list gives the same listing, and the same JSON again.

    JSON is evaluated as its listing's text would be: a merged anonymous set left with one element
    reads back as a plain value there too (see test_listing_reparses_to_itself).
    """
    rs = load_ruleset(path)
    obj = json.loads(json.dumps(rs.to_json()))
    back = ruleset_from_json(obj, "json")
    for s in (s for t in rs.tables for s in t.sets.values()):
        s.typeof = None  # nft 1.0.6's JSON writes a typeof set's type
    want = parse_ruleset(rs.list(), "listing")
    assert _json_lossy(back.list()) == _json_lossy(want.list())
    if re.search(r"\{ [^,{}]+ \}", rs.list()) is None:
        assert back.to_json() == rs.to_json()


def test_json_file_is_detected(tmp_path):
    """load_ruleset reads JSON when the file content is JSON."""
    path = LOADABLE[0]
    f = tmp_path / "rules.json"
    f.write_text(path.with_name(path.name + ".json").read_text())
    assert norm_list(load_ruleset(f).list()) == norm_list(load_ruleset(path).list())


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_file_rejected_where_nft_rejects_it(path):
    """Each invalid file raises ConfigError at the line:col of nft's first error."""
    with pytest.raises(ConfigError) as ei:
        load_ruleset(path)
    e = ei.value
    err = path.with_name(path.name + ".err").read_text()
    assert (e.line, e.col) == error_position(err)
    # the file nft names (an included one, when the error is in it), relative to where regen.sh ran
    nft_file = re.search(r"^(\S+?):\d+:\d+(?:-\d+)?: Error:", err, re.M).group(1)
    assert Path(e.path).resolve() == (DATA / nft_file).resolve()
    # and the includes that led there ("In file included from ...", "from ..." lines), as many
    chain = next(i for i, x in enumerate(err.split("\n")) if re.match(r"\S+:\d+:\d+(?:-\d+)?: Error:", x))
    assert len(e.included_from) == chain
    assert str(e).split("\n")[chain].startswith(f"{e.path}:{e.line}:{e.col}: Error: ")


# Where flowpath's message is not nft's, and why (the position is still nft's).
MESSAGE_DIFFERS = {
    "bad_address.nft": "flowpath names the value it could not resolve",
    "unknown_service.nft": "flowpath names the value it could not resolve",
    "unknown_set.nft": "flowpath names the set",
    "undefined_variable.nft": "no 'did you mean' suggestion",
    "bad_policy.nft": "lark's parser does not list what it expected",
    "missing_separator.nft": "lark's parser does not list what it expected",
    "unterminated_string.nft": "lark's lexer sees the quote, not bison's junk token",
    "delete_rule_unknown_handle.nft": "nft 1.0.6 suggests a chain ('did you mean chain ...')",
    "replace_rule_unknown_handle.nft": "nft 1.0.6 suggests a chain ('did you mean chain ...')",
}


def nft_error(err_text: str) -> tuple[int, str]:
    """(caret width, message) of nft's first error line `file:line:col[-col]: Error: msg`."""
    m = re.search(r":\d+:(\d+)(?:-(\d+))?: Error: (.*)", err_text)
    assert m, err_text
    width = int(m.group(2)) - int(m.group(1)) + 1 if m.group(2) else 1
    return width, m.group(3)


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_file_message_and_caret_as_nft(path):
    """The message and the caret's width are nft's too, but for the differences listed above."""
    with pytest.raises(ConfigError) as ei:
        load_ruleset(path)
    width, msg = nft_error(path.with_name(path.name + ".err").read_text())
    assert ei.value.length == width
    if path.name not in MESSAGE_DIFFERS:
        assert ei.value.msg == msg


@pytest.mark.root
@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_file_rejected_by_live_nft(netns, path):
    res = netns.load(path)
    assert res.returncode != 0
    with pytest.raises(ConfigError) as ei:
        load_ruleset(path)
    assert (ei.value.line, ei.value.col) == error_position(res.stderr)

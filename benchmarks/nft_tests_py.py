"""Conformance with the nftables project's own rule tests (its tests/py `.t` files).

    python benchmarks/nft_tests_py.py --tests /path/to/nftables/tests/py [--json out.json] [-v]

Each `.t` file declares tables (`*family;name;chain,...`), chains (`:name;type ... hook ...`), sets
(`!name type T [timeout T] [flags F];ok|fail`), elements (`?set e1,e2;ok|fail`), objects
(`%name type spec;ok|fail`) and rules (`rule;ok[;listing]` or `rule;fail`). As the project's runner
(nft-test.py) does, a rule is one unit per table and chain: it is added to the chain after the
declarations that succeeded so far, and must then be accepted and listed as the third field says (the
rule itself when there is none), or be refused. flowpath has no kernel to add to: each unit is one
`nft -f` file (the declarations, then `add rule`) that flowpath loads and lists; a refusal must be a
ConfigError with file:line:col, anything else (a traceback) counts as a crash.

The score is what issue 18 measures: valid units accepted and listed as nft lists them, invalid ones
refused, by family. The tests are not shipped with flowpath (they belong to nftables); point --tests
at an nftables 1.0.6 tree's tests/py, the version Debian's nft is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from flowpath.config.nft import ruleset_from_text
from flowpath.config.nft.output import output_options
from flowpath.config.nft.printer import rule_print
from flowpath.errors import ConfigError


@dataclass
class Unit:
    """One rule in one table's chain, and what became of it."""

    file: str
    line: int
    family: str
    rule: str
    valid: bool
    want: str  # the listing nft gives (valid units)
    got: str = ""  # flowpath's listing, or its error
    outcome: str = ""  # pass | refused | accepted | differs | crash
    json: str = ""  # valid units with a JSON form: pass | refused | differs | crash (see _json_unit)


@dataclass
class TestFile:
    """A `.t` file's state as its runner walks it: tables, chains, and the declarations that took."""

    path: Path
    tables: list[tuple[str, str, list[str]]] = field(default_factory=list)
    chains: dict[str, str] = field(default_factory=dict)
    decls: dict[str, list[str]] = field(default_factory=dict)  # by table: the `add set ...` that took


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip())


def _set_norm(s: str) -> str:
    """Anonymous sets' elements in sorted order, as nft-test.py's set_check_element tolerates."""

    def sort_body(m: re.Match[str]) -> str:
        elems = sorted(re.sub(r"\s*:\s*", " : ", _norm(e)) for e in m.group(1).split(","))
        return "{ " + ", ".join(elems) + " }"

    return re.sub(r"\{([^{}]*)\}", sort_body, _norm(s))


def _table_text(tf: TestFile, family: str, name: str, chains: list[str]) -> str:
    """One table with its chains and the declarations that took in it: each table is its own file, as
    each is its own kernel object for nft-test.py (one family flowpath lacks does not sink the others)."""
    body = "".join(f"\tchain {c} {{ {tf.chains.get(c, '')}; }}\n" for c in chains)
    return f"table {family} {name} {{\n{body}}}\n" + "".join(tf.decls.get(f"{family} {name}", []))


def _load(text: str, name: str):
    """(ruleset, None) or (None, error text); a crash raises."""
    try:
        return ruleset_from_text(text, name), None
    except ConfigError as e:
        return None, str(e).splitlines()[0] if str(e) else "ConfigError"


def _decl(tf: TestFile, kind: str, body: str, ok: bool) -> bool:
    """Try a declaration in every table; keep it where it took. True when every table did as expected."""
    expected = True
    for (family, name, chains), cmd in zip(tf.tables, _declaration(tf, kind, body), strict=True):
        try:
            rs, _ = _load(_table_text(tf, family, name, chains) + cmd, str(tf.path))
        except Exception:  # noqa: BLE001 - a crash is a result here
            rs = None
        if rs is not None:
            tf.decls.setdefault(f"{family} {name}", []).append(cmd)
        expected &= (rs is not None) == ok
    return expected


def _declaration(tf: TestFile, kind: str, body: str) -> list[str]:
    """The commands nft-test.py issues for a `!`, `?` or `%` line, one per table."""
    cmds = []
    for family, name, _ in tf.tables:
        table = f"{family} {name}"
        if kind == "!":
            tok = body.split(" ")
            sname, stype, i = tok[0], tok[2], 3
            while len(tok) > i + 1 and tok[i] == ".":
                stype += " . " + tok[i + 1]
                i += 2
            timeout = flags = ""
            if len(tok) == i + 2 and tok[i] == "timeout":
                timeout, i = f"timeout {tok[i + 1]};", i + 2
            if len(tok) == i + 2 and tok[i] == "flags":
                flags = f"flags {tok[i + 1]}; "
            cmds.append(f"add set {table} {sname} {{ type {stype};{timeout} {flags}}}\n")
        elif kind == "?":
            sname, _, elems = body.partition(" ")
            cmds.append(f"add element {table} {sname} {{ {elems.strip()} }}\n")
        else:
            tok = body.split(" ")
            otype, spec = tok[2], tok[3:]
            if otype == "ct" and spec and spec[0] in ("helper", "timeout", "expectation"):
                otype, spec = f"ct {spec[0]}", spec[1:]
            cmds.append(f"add {otype} {table} {tok[0]} {' '.join(spec)}\n")
    return cmds


def _json_forms(path: Path) -> tuple[dict[str, list], dict[str, list]]:
    """The rules' JSON forms (`.t.json`, nft-test.py's input for -j) and, where nft lists them
    otherwise, the listing (`.t.json.output`), by rule text."""

    def read(p: Path) -> dict[str, list]:
        out: dict[str, list] = {}
        if not p.exists():
            return out
        for block in re.split(r"^# ", p.read_text(), flags=re.M)[1:]:
            rule, _, body = block.partition("\n")
            try:
                out[rule.strip()] = json.loads(body)
            except json.JSONDecodeError:
                pass  # a broken expectation is no unit
        return out

    return read(path.with_name(path.name + ".json")), read(path.with_name(path.name + ".json.output"))


def _json_unit(u: Unit, rs, family: str, name: str, chain: str, expr: list, want: list) -> None:
    """nft-test.py -j: the rule added as JSON to its table (`rs`, as flowpath lists it in JSON),
    then listed as `nft -j -s -p` lists it."""
    if rs is None:  # the table itself is refused (a family or hook flowpath lacks)
        u.json = "refused"
        return
    obj = rs.to_json()
    obj["nftables"].append({"add": {"rule": {"family": family, "table": name, "chain": chain, "expr": expr}}})
    try:
        got, err = _load(json.dumps(obj), u.file + ".json")
        if got is None:
            u.json = "refused"
            return
        with output_options(stateless=True, numeric_proto=True):
            listed = [o["rule"] for o in got.to_json()["nftables"] if "rule" in o]
    except Exception:  # noqa: BLE001 - a crash is a result here
        u.json = "crash"
        return
    same = listed and json.dumps(listed[-1]["expr"], sort_keys=True) == json.dumps(want, sort_keys=True)
    u.json = "pass" if same else "differs"


def run_file(path: Path, rel: str) -> tuple[list[Unit], Counter]:
    """Every unit of one `.t` file, and how its declarations fared."""
    tf = TestFile(path)
    jin, jout = _json_forms(path)
    units: list[Unit] = []
    decls: Counter = Counter()
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.startswith("#") or line.startswith("-"):
            continue  # comments; `-` lines only run with nft-test.py's --fix
        if line[0] == "*":
            family, name, chains = line[1:].split(";")
            tf.tables.append((family, name, chains.split(",")))
            continue
        if line[0] == ":":
            cname, _, spec = line[1:].partition(";")
            tf.chains[cname] = spec
            continue
        if line[0] in "!?%":
            brace = line.rfind("}")
            body, state = (
                (line[1 : brace + 1], line[brace + 2 :])
                if line[0] == "%" and brace > 0
                else (line[1:].rsplit(";", 1) + [""])[:2]
            )
            ok = _decl(tf, line[0], body.strip(), state.strip() == "ok")
            decls["as expected" if ok else "not as expected"] += 1
            continue
        fields = line.split(";")
        if len(fields) not in (2, 3) or fields[1].strip() not in ("ok", "fail"):
            continue  # nft-test.py skips malformed lines too
        rule, valid = fields[0].strip(), fields[1].strip() == "ok"
        want = fields[2].strip() if len(fields) == 3 else rule
        for family, name, chains in tf.tables:
            for chain in chains:
                u = Unit(rel, lineno, family, rule, valid, want)
                units.append(u)
                if valid and rule in jin:  # the table without the rule, to which the JSON rule is added
                    pre, _ = _load(_table_text(tf, family, name, chains), rel)
                    _json_unit(u, pre, family, name, chain, jin[rule], jout.get(rule, jin[rule]))
                text = _table_text(tf, family, name, chains) + f"add rule {family} {name} {chain} {rule}\n"
                try:
                    rs, err = _load(text, rel)
                except Exception as e:  # noqa: BLE001 - a crash is a result here
                    u.outcome, u.got = "crash", f"{type(e).__name__}: {e}"
                    continue
                if rs is None:
                    u.outcome, u.got = ("refused" if valid else "pass"), err
                    continue
                if not valid:
                    u.outcome = "accepted"
                    continue
                tbl = next(t for t in rs.tables if t.family == family and t.name == name)
                r = tbl.chains[chain].rules[-1]
                try:
                    with output_options(stateless=True, numeric_proto=True):  # nft-test.py lists so
                        u.got = rule_print(family, r.expr, r.comment)
                except Exception as e:  # noqa: BLE001
                    u.outcome, u.got = "crash", f"list: {type(e).__name__}: {e}"
                    continue
                same = _norm(u.got) == _norm(want) or _set_norm(u.got) == _set_norm(want)
                u.outcome = "pass" if same else "differs"
    return units, decls


def summarise(units: list[Unit]) -> dict:
    by: dict[str, Counter] = defaultdict(Counter)
    for u in units:
        for key in (u.family, "all", "ip/ip6/inet" if u.family in ("ip", "ip6", "inet") else "other"):
            by[key][("valid " if u.valid else "invalid ") + u.outcome] += 1
            by[key]["valid" if u.valid else "invalid"] += 1
    for u in units:
        if u.json:
            for key in (u.family, "all", "ip/ip6/inet" if u.family in ("ip", "ip6", "inet") else "other"):
                by[key]["json " + u.json] += 1
                by[key]["json"] += 1
    out = {}
    for key, c in sorted(by.items()):
        v, i = c["valid"], c["invalid"]
        out[key] = {
            "valid": v, "valid_listed": c["valid pass"], "valid_refused": c["valid refused"],
            "valid_differs": c["valid differs"], "invalid": i, "invalid_refused": c["invalid pass"],
            "crashes": c["valid crash"] + c["invalid crash"],
            "valid_pct": round(100 * c["valid pass"] / v, 1) if v else None,
            "invalid_pct": round(100 * c["invalid pass"] / i, 1) if i else None,
            "json": c["json"], "json_listed": c["json pass"],
            "json_pct": round(100 * c["json pass"] / c["json"], 1) if c["json"] else None,
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", required=True, type=Path, help="an nftables tree's tests/py")
    ap.add_argument("--json", type=Path, help="write the summary and every failing unit here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failing unit")
    ap.add_argument("files", nargs="*", help="only these .t files (relative to --tests)")
    a = ap.parse_args(argv)
    paths = [a.tests / f for f in a.files] or sorted(a.tests.glob("*/*.t"))
    if not paths:
        print(f"no .t files under {a.tests}", file=sys.stderr)
        return 2
    units, decls = [], Counter()
    for p in paths:
        u, d = run_file(p, str(p.relative_to(a.tests)))
        units += u
        decls += d
    summary = summarise(units)
    failing = [u for u in units if u.outcome != "pass" or u.json not in ("", "pass")]
    if a.verbose:
        for u in failing:
            print(
                f"{u.file}:{u.line} [{u.family}] {u.outcome}: {u.rule}\n    want {u.want}\n    got  {u.got}"
            )
    for key, s in summary.items():
        print(
            f"{key:12} valid {s['valid_listed']:5}/{s['valid']:<5} ({s['valid_pct']}%)  "
            f"invalid refused {s['invalid_refused']:4}/{s['invalid']:<4} ({s['invalid_pct']}%)  "
            f"differs {s['valid_differs']}  crashes {s['crashes']}  "
            f"json {s['json_listed']}/{s['json']} ({s['json_pct']}%)"
        )
    print(f"declarations (sets, elements, objects): {dict(decls)}")
    if a.json:
        a.json.write_text(json.dumps({
            "summary": summary, "declarations": dict(decls),
            "failing": [u.__dict__ for u in failing],
        }, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

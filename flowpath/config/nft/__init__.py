"""nftables ruleset front end: `nft -f` text or libnftables JSON in, `nft list ruleset` text or JSON out.

Linux: nftables src/libnftables.c (nft_run_cmd_from_filename and the JSON entry point).
"""

from __future__ import annotations

import json as _json
from pathlib import Path

from flowpath.config.nft.ir import Chain, Flowtable, Rule, Ruleset, Set, Table
from flowpath.config.nft.json import ruleset_from_json
from flowpath.config.nft.parser import parse_ruleset
from flowpath.errors import ConfigError


def load_ruleset(path: str | Path) -> Ruleset:
    """Read `path` as nft text, or as libnftables JSON when its content starts with '{'."""
    p = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(p, 1, 1, f"Could not open file: {e.strerror or e}") from None
    if text.lstrip().startswith("{"):
        try:
            obj = _json.loads(text)
        except _json.JSONDecodeError as e:
            lines = text.split("\n")
            raise ConfigError(
                p, e.lineno, e.colno, f"Invalid JSON: {e.msg}", source=lines[e.lineno - 1]
            ) from None
        return ruleset_from_json(obj, p)
    return parse_ruleset(text, p)


__all__ = [
    "Chain", "ConfigError", "Flowtable", "Rule", "Ruleset", "Set", "Table",
    "load_ruleset", "parse_ruleset", "ruleset_from_json",
]  # fmt: skip

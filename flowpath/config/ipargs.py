"""Words and arguments of `ip` commands: the lexer and the argument parsers every handler shares.

Linux: iproute2 lib/utils.c (getcmdline, makeargs, matches, get_prefix, get_addr, check_ifname) and
lib/ll_addr.c (ll_addr_a2n). Errors carry the token's file, line and column.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from flowpath.errors import ConfigError
from flowpath.net.inetdev import ADDR_BITS, parse_addr
from flowpath.net.link import Link, parse_hwaddr
from flowpath.net.model import IFNAMSIZ, Network
from flowpath.net.rtnetlink import RtnlError


class Token(NamedTuple):
    """One word of a command, where it was written: 1-based line and column, and that line's text."""

    text: str
    line: int
    col: int
    source: str


def _split(text: str, lineno: int, source: str, offset: int) -> list[Token]:
    """Words of one physical line (lib/utils.c › makeargs: blanks separate, quotes group)."""
    tokens, i, n = [], offset, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        if text[i] in "\"'":
            end = text.find(text[i], i + 1)
            end = n if end < 0 else end
            tokens.append(Token(text[i + 1 : end], lineno, start + 1, source))
            i = end + 1
            continue
        while i < n and not text[i].isspace():
            i += 1
        tokens.append(Token(text[start:i], lineno, start + 1, source))
    return tokens


def read_commands(text: str) -> list[list[Token]]:
    """Commands of a batch file (lib/utils.c › getcmdline): `#` ends a line, a backslash right
    before the newline joins the next one, blank lines are skipped."""
    commands, current = [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        body, hash_ = raw, raw.find("#")
        if hash_ >= 0:
            body = raw[:hash_]
        cont = hash_ < 0 and body.endswith("\\")
        current += _split(body[:-1] if cont else body, lineno, raw, 0)
        if not cont:
            if current:
                commands.append(current)
            current = []
    if current:
        commands.append(current)
    return commands


def matches(word: str, full: str) -> bool:
    """iproute2 lib/utils.c › matches: `word` is a non-empty prefix of `full`."""
    return 0 < len(word) <= len(full) and full.startswith(word)


class IpCmd:
    """A cursor over one command's tokens, with the argument parsers every handler shares."""

    def __init__(self, net: Network, path: str, tokens: list[Token]):
        self.net, self.path, self.tokens, self.pos = net, path, tokens, 0
        self.family: int | None = None  # from -4 / -6 / -f
        self.at: dict[str, Token] = {}  # request attribute -> the token that set it, for RtnlError carets

    def error(self, tok: Token, msg: str, length: int | None = None) -> ConfigError:
        return ConfigError(
            self.path, tok.line, tok.col, msg, source=tok.source, length=length or len(tok.text)
        )

    def more(self) -> bool:
        return self.pos < len(self.tokens)

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.more() else None

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def arg(self, keyword: Token) -> Token:
        """The word after `keyword`; ConfigError at the keyword if the line ends first."""
        if not self.more():
            raise self.error(keyword, f'missing argument after "{keyword.text}"')
        return self.take()

    def uint(self, tok: Token, what: str, maximum: int = 0xFFFFFFFF) -> int:
        text = tok.text
        try:
            value = int(text, 0) if text[:2].lower() in ("0x",) else int(text, 10)
        except ValueError:
            raise self.error(tok, f'invalid {what} "{text}"') from None
        if not 0 <= value <= maximum:
            raise self.error(tok, f'{what} "{text}" out of range')
        return value

    def device(self, tok: Token, net: Network) -> Link:
        try:
            return net.link_by_name(tok.text)
        except KeyError:
            raise self.error(tok, f'Cannot find device "{tok.text}"') from None

    def address(self, tok: Token, family: int | None = None) -> tuple[int, int]:
        """(family, address) of an address word; the family must agree with -4/-6 and `family`."""
        family = family or self.family
        try:
            return parse_addr(tok.text, family)
        except ValueError:
            word = {4: "inet ", 6: "inet6 "}.get(family, "")
            raise self.error(tok, f'{word}address is expected rather than "{tok.text}"') from None

    def prefix(self, tok: Token, family: int | None = None, default_ok: bool = False) -> tuple[int, int, int]:
        """(family, prefix, prefixlen) of `ADDR[/PLEN]` (lib/utils.c › get_prefix); `default` is /0."""
        family = family or self.family
        if default_ok and tok.text in ("default", "all", "any"):
            return family or 0, 0, 0
        text, _, plen_text = tok.text.partition("/")
        family, addr = self.address(Token(text, tok.line, tok.col, tok.source), family)
        if not plen_text:
            return family, addr, ADDR_BITS[family]
        plen_tok = Token(plen_text, tok.line, tok.col + len(text) + 1, tok.source)
        if not plen_text.isdigit():
            raise self.error(plen_tok, f'invalid prefix length "{plen_text}"')
        plen = int(plen_text)
        if plen > ADDR_BITS[family]:
            raise self.error(
                plen_tok, f"prefix length {plen} too long for IPv{family} (at most {ADDR_BITS[family]})"
            )
        return family, addr, plen

    def hwaddr(self, tok: Token) -> bytes:
        try:
            return parse_hwaddr(tok.text)
        except ValueError:
            raise self.error(tok, f'"{tok.text}" is invalid lladdr') from None

    def ifname(self, tok: Token) -> str:
        """iproute2 lib/utils.c › check_ifname."""
        name = tok.text
        if not name or len(name) >= IFNAMSIZ or any(c in name for c in "/: \t") or name in (".", ".."):
            raise self.error(tok, f'"{name}" is not a valid ifname')
        return name

    def rtnl(self, request: Callable[[], object], fallback: Token) -> object:
        """Run a model request; a refusal becomes ConfigError at the token of the attribute it names."""
        try:
            return request()
        except RtnlError as e:
            tok = self.at.get(e.arg or "", fallback)
            raise self.error(tok, e.msg) from None

    def unknown(self, tok: Token) -> ConfigError:
        return self.error(tok, f'unknown keyword "{tok.text}"')

"""Configuration errors that print the way nft prints them.

Linux: nftables src/erec.c › erec_print (file:line:col: Error: msg, the line, a caret).
"""

from __future__ import annotations


class ConfigError(Exception):
    """A bad configuration line: file, 1-based line and column, message.

    `source` is the offending line's text when known; `length` the caret's width.
    """

    def __init__(self, path: str, line: int, col: int, msg: str, source: str | None = None, length: int = 1):
        super().__init__(msg)
        self.path, self.line, self.col, self.msg = str(path), line, col, msg
        self.source, self.length = source, max(1, length)
        self.included_from: list[str] = []  # `file:line:col` of the includes that led here, innermost first

    def __str__(self) -> str:
        head = f"{self.path}:{self.line}:{self.col}: Error: {self.msg}"
        if self.included_from:  # as nft prints it
            first, *rest = self.included_from
            head = "".join([f"In file included from {first}:\n", *(f"{' ' * 17}from {x}:\n" for x in rest), head])
        if self.source is None:
            return head
        text = self.source.rstrip("\n")
        # copy the line's tabs so the caret lands under the token in any tab width (as nft does)
        caret = "".join(c if c == "\t" else " " for c in text[: max(0, self.col - 1)]) + "^" * self.length
        return f"{head}\n{text}\n{caret}"


class ConfigWarning(UserWarning):
    """Something in a configuration file that works but should be fixed; printed by the CLI as
    `file: Warning: msg` (nft's erec_print with EREC_WARNING), the command still runs."""

    def __init__(self, path: str, msg: str):
        super().__init__(msg)
        self.path, self.msg = str(path), msg

    def __str__(self) -> str:
        return f"{self.path}: Warning: {self.msg}"


def warn_if_others_can_read(path, what: str) -> None:
    """ConfigWarning when the file `path`, which holds `what` (keys), is readable by other users: the
    check ssh makes of a private key, as a warning. No Linux counterpart (ip reads what it is given)."""
    import os
    import stat
    import warnings

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        warnings.warn(ConfigWarning(path, f"it holds {what} and other users can read it (mode "
                                          f"{stat.S_IMODE(mode):04o}); chmod 600 {path}"), stacklevel=2)  # fmt: skip


class CaptureError(Exception):
    """A truncated or corrupt capture file; the message names the file and byte offset."""

    def __init__(self, path: str, offset: int, msg: str):
        super().__init__(msg)
        self.path, self.offset, self.msg = str(path), offset, msg

    def __str__(self) -> str:
        return f"{self.path}: byte {self.offset}: {self.msg}"


class UsageError(Exception):
    """A command-line argument that cannot work (unknown interface, missing file); exit code 2."""


class PortError(Exception):
    """A port (kernel interface) that cannot be opened, prepared or used any more: it vanished, went
    down, or refused a setting. The message names the interface; the gateway logs it and keeps its
    other ports."""

    def __init__(self, name: str, msg: str):
        super().__init__(msg)
        self.name, self.msg = str(name), msg

    def __str__(self) -> str:
        return f"{self.name}: {self.msg}"


class CtlError(Exception):
    """The control socket cannot be used: no gateway answers, one already does, or the connection
    broke; exit code 1."""

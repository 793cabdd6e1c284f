"""The error an rtnetlink request answers with.

Linux: net/core/rtnetlink.c (errno plus the extack message that `ip` prints as "Error: ...").
"""

from __future__ import annotations


class RtnlError(Exception):
    """A request the kernel would refuse. `msg` is the kernel's text; `arg` names the request attribute
    at fault ("dev", "dst", "gateway", "src", "address", "lladdr", "name", "mtu", "link", "peer") so the
    ip-batch parser can point its caret at the token that set it.
    """

    def __init__(self, msg: str, arg: str | None = None):
        super().__init__(msg)
        self.msg, self.arg = msg, arg

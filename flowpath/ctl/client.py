"""The client side of `flowpath ctl`: one request over the gateway's control socket, one reply.

No Linux counterpart (the tools' netlink calls). The client reads the files a command names (`nft -f
FILE`) and sends their text, so the gateway never opens a path on a client's word.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from flowpath.ctl.commands import MAX_FILE_BYTES
from flowpath.errors import ConfigError, CtlError

NO_GATEWAY = "no flowpath gateway at {} (is `flowpath run` running in this network namespace?)"
REPLY_TIMEOUT_S = 120.0  # `nft -f` of a large ruleset parses for a while


def ctl_call(path: str | Path, request: dict, timeout_s: float = REPLY_TIMEOUT_S) -> dict:
    """Send one request, return the reply {"rc", "out", "err"[, "json"]}; CtlError when no gateway
    answers at path, or the reply does not come or makes no sense."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise CtlError(NO_GATEWAY.format(path)) from None
        except PermissionError:
            raise CtlError(f"{path}: permission denied (the gateway's control socket is root's)") from None
        try:
            sock.sendall(json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read the request (a peer it does not serve): the reply says why
        chunks = []
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            chunks.append(data)
    except TimeoutError:
        raise CtlError(f"no reply from the gateway at {path} within {timeout_s:g} s") from None
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        r = json.loads(b"".join(chunks))
    except ValueError:
        r = None
    if not (isinstance(r, dict) and isinstance(r.get("rc"), int) and isinstance(r.get("out"), str)
            and isinstance(r.get("err"), str)):  # fmt: skip
        raise CtlError(f"the gateway at {path} sent no reply (it closed the connection)")
    return r


def ctl_request(argv: list[str]) -> dict:
    """The request for a command line: its words, and for `nft ... -f FILE` the file's name and text."""
    request: dict = {"argv": list(argv)}
    name = _nft_file(argv)
    if name is not None:
        request["file"] = {"name": name, "text": _read(name)}
    return request


def _nft_file(argv: list[str]) -> str | None:
    if argv[:1] != ["nft"]:
        return None
    for k, a in enumerate(argv[1:], 1):
        if a in ("-f", "--file") and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith("--file="):
            return a[len("--file=") :]
    return None


def _read(name: str) -> str:
    """The ruleset file, as nft reports a file it cannot use (exit code 2)."""
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(name, 1, 1, f"Could not process rule: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(name, 1, 1, f"larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise ConfigError(name, 1, 1, f"not UTF-8 text (byte {e.start})") from None

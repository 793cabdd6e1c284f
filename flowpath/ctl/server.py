"""The control socket: one JSON request per connection, answered between two polls of the gateway.

No Linux counterpart (netlink plays this part for `ip`, `nft` and `conntrack`). The gateway's loop is
single-threaded and owns the datapath; it polls `poll_events()` beside its ports and calls `service(fd,
revents)` for each ready descriptor, so a command runs between two packet polls and needs no lock.
Nothing here blocks: the socket and every connection are non-blocking, a request is read as it comes
(at most MAX_REQUEST_BYTES), a reply is written as the client reads it (waiting at most WRITE_WAIT_MS
per call when it is larger than the socket buffer; the rest goes on at the next call, on POLLOUT or any
other event), and a client that stalls past its deadline is dropped (`expire()`, which `service` also
runs).

Wire format: the client sends one line of UTF-8 JSON, {"argv": [...], "file": {"name", "text"}?}; the
server answers one line, {"rc": int, "out": str, "err": str, "json"?: ...}, and closes.

Who may ask: the socket file is created with `mode` (0600: root's, or the gateway's user's) in a
directory made 0700, and SO_PEERCRED is checked as well (uid 0 or the server's own uid), unless `mode`
lets group or others write to the socket (connect(2) needs write permission): then the file's
permissions decide.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Callable

from flowpath.errors import CtlError

RUN_DIR = Path("/run/flowpath")
MAX_REQUEST_BYTES = 9 << 20  # a 4 MiB ruleset's text, JSON-escaped (tabs and newlines take two bytes)
MAX_CLIENTS = 16
READ_BUDGET_BYTES = 1 << 20  # read per service() call, so one client cannot hold the loop
REQUEST_TIMEOUT_NS = 5_000_000_000  # from accept to the request's last byte
REPLY_TIMEOUT_NS = 10_000_000_000  # from the reply's first byte to its last
LINGER_NS = 1_000_000_000  # after the reply, for the client to close first (see _Conn)
WRITE_WAIT_MS = 200  # per service(): how long a reply larger than the socket buffer waits for its reader
_WRITE_BITS = 0o022  # group or others may connect


def default_ctl_path() -> Path:
    """/run/flowpath/net-<inode of /proc/self/ns/net>.sock: one socket per network namespace, so that
    `ip netns exec NS flowpath ctl ...` finds the gateway of NS."""
    return RUN_DIR / f"net-{os.stat('/proc/self/ns/net').st_ino}.sock"


def peer_allowed(uid: int, own_uid: int, mode: int) -> bool:
    """May a peer with this uid use a server running as own_uid whose socket has `mode`?"""
    return uid == 0 or uid == own_uid or bool(mode & _WRITE_BITS)


def reply(rc: int, out: str = "", err: str = "", payload=None) -> dict:
    """A reply: exit code, stdout and stderr text, and a JSON payload when the command has one."""
    r = {"rc": rc, "out": out, "err": err}
    if payload is not None:
        r["json"] = payload
    return r


class _Conn:
    """One client: what has come of its request, then what is left of its reply, then `lingering`:
    the reply is sent and the write side shut, and what the client still sends (the rest of a request
    refused early) is read and thrown away until it closes. A Unix socket closed with unread data
    resets its peer (unix_release_sock), which could lose the reply on the client's side."""

    __slots__ = ("sock", "inbuf", "out", "deadline_ns", "lingering")

    def __init__(self, sock: socket.socket, deadline_ns: int):
        self.sock, self.inbuf, self.out, self.deadline_ns = sock, bytearray(), None, deadline_ns
        self.lingering = False


class CtlServer:
    """The gateway's side of `flowpath ctl`.

    path      where the socket lives (default_ctl_path() when None); its directory is made 0700
    dispatch  callable(request: dict) -> reply dict; it runs inside service()
    mode      the socket file's permissions (0600: nobody but root and the gateway's user)
    Raises CtlError when a live server already answers at path, or path is something else than a
    socket. A socket file nobody answers on (a gateway that died) is replaced.
    """

    def __init__(self, path: str | Path | None, dispatch: Callable[[dict], dict], *, mode: int = 0o600):
        self.path = Path(path) if path is not None else default_ctl_path()
        self.dispatch, self.mode, self.uid = dispatch, mode, os.geteuid()
        self.conns: dict[int, _Conn] = {}
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(mode=0o700, parents=True)
        _claim(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            os.fchmod(sock.fileno(), mode)  # unix_bind creates the file with the socket's mode: no window
            sock.bind(str(self.path))
            os.chmod(self.path, mode)  # without the umask's say
            sock.listen(MAX_CLIENTS)
        except OSError as e:
            sock.close()
            raise CtlError(f"cannot listen at {self.path}: {e.strerror or e}") from None
        self.sock, self.ino = sock, os.stat(self.path).st_ino

    # ---- what the loop polls -------------------------------------------------------------------
    def fds(self) -> list[int]:
        """The descriptors to poll: the listening socket and the clients'."""
        return [self.sock.fileno(), *self.conns]

    def poll_events(self) -> list[tuple[int, int]]:
        """(fd, events) for poll(2): POLLIN, or POLLOUT for a client whose reply is being written."""
        return [(self.sock.fileno(), select.POLLIN)] + [
            (fd, select.POLLOUT if c.out is not None else select.POLLIN) for fd, c in self.conns.items()
        ]

    def service(self, fd: int, revents: int = select.POLLIN) -> None:
        """Do what fd is ready for: accept clients, read a request (and answer it), write a reply."""
        now = time.monotonic_ns()
        if fd == self.sock.fileno():
            self._accept(now)
        else:
            c = self.conns.get(fd)
            if c is not None and revents & (select.POLLERR | select.POLLNVAL):
                self._drop(c)
            elif c is not None and c.lingering:
                self._discard(c)
            elif c is not None and c.out is None:
                self._read(c, now)
            elif c is not None:
                self._write(c, now, WRITE_WAIT_MS)
        for c in [c for c in self.conns.values() if c.out is not None]:
            self._write(c, now, 0)  # for a loop that polls POLLIN only: replies go on at each call
        self.expire(now)

    def expire(self, now_ns: int | None = None) -> None:
        """Drop the clients past their deadline (call at least once a second while any is connected)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        for c in [c for c in self.conns.values() if now >= c.deadline_ns]:
            self._drop(c)

    def close(self) -> None:
        """Close every connection and the socket; remove the socket file if it is still ours."""
        for c in list(self.conns.values()):
            self._drop(c)
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.ino:
                os.unlink(self.path)
        except OSError:
            pass

    # ---- the steps -----------------------------------------------------------------------------
    def _accept(self, now: int) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNABORTED, EMFILE...: the client retries or gives up
                return
            sock.setblocking(False)
            c = _Conn(sock, now + REQUEST_TIMEOUT_NS)
            self.conns[sock.fileno()] = c
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if not peer_allowed(uid, self.uid, self.mode):
                self._answer(c, reply(1, err=f"flowpath ctl: permission denied (uid {uid}): the gateway "
                                             f"answers uid 0 and {self.uid} only\n"), now)  # fmt: skip
            elif len(self.conns) > MAX_CLIENTS:
                self._answer(c, reply(1, err="flowpath ctl: too many clients, try again\n"), now)

    def _read(self, c: _Conn, now: int) -> None:
        got = 0
        while got < READ_BUDGET_BYTES:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(c)
                return
            if not data:  # gone before the end of its request
                self._drop(c)
                return
            got += len(data)
            end = data.find(b"\n")
            if end >= 0:
                c.inbuf += data[:end]
                break
            c.inbuf += data
            if len(c.inbuf) > MAX_REQUEST_BYTES:
                break
        else:
            return
        if len(c.inbuf) > MAX_REQUEST_BYTES:
            r = reply(2, err=f"flowpath ctl: request larger than {MAX_REQUEST_BYTES >> 20} MiB\n")
        else:
            r = self._call(bytes(c.inbuf))
        c.inbuf = bytearray()
        self._answer(c, r, now)

    def _call(self, raw: bytes) -> dict:
        """Decode and dispatch a request; whatever goes wrong becomes a reply, never an exception."""
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return reply(2, err="flowpath ctl: the request is not one line of JSON\n")
        try:
            return self.dispatch(request)
        except Exception as e:  # a bug in a command must not stop the gateway
            return reply(1, err=f"flowpath ctl: internal error: {type(e).__name__}: {e}\n")

    def _answer(self, c: _Conn, r: dict, now: int) -> None:
        c.out = memoryview(json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n")
        c.deadline_ns = now + REPLY_TIMEOUT_NS
        self._write(c, now, WRITE_WAIT_MS)

    def _write(self, c: _Conn, now: int, wait_ms: int) -> None:
        """Send what the socket takes; a reader that keeps up gets a large reply within wait_ms, the
        rest waits for the next service() (POLLOUT, or any call)."""
        end = now + wait_ms * 1_000_000
        while c.out:
            try:
                n = c.sock.send(c.out[: 1 << 20])
            except (BlockingIOError, InterruptedError):
                left_ms = (end - time.monotonic_ns()) // 1_000_000
                if left_ms <= 0:
                    return
                p = select.poll()
                p.register(c.sock.fileno(), select.POLLOUT)
                p.poll(left_ms)
                continue
            except OSError:
                self._drop(c)
                return
            c.out = c.out[n:]
        try:
            c.sock.shutdown(socket.SHUT_WR)  # the client reads to EOF
        except OSError:
            self._drop(c)
            return
        c.out, c.lingering, c.deadline_ns = None, True, now + LINGER_NS

    def _discard(self, c: _Conn) -> None:
        for _ in range(READ_BUDGET_BYTES >> 16):
            try:
                if not c.sock.recv(65536):
                    break
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
        else:
            return
        self._drop(c)

    def _drop(self, c: _Conn) -> None:
        self.conns.pop(c.sock.fileno(), None)
        c.sock.close()


def _claim(path: Path) -> None:
    """Make room for the socket: nothing there, or a socket file nobody answers on (removed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise CtlError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # the gateway that made it is gone
        return
    except OSError as e:
        raise CtlError(f"cannot check {path}: {e.strerror or e}") from None
    finally:
        probe.close()
    raise CtlError(f"a flowpath gateway already answers at {path}")

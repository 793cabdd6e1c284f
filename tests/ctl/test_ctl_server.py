"""The control socket: where it lives, who may use it, and that no client can hold the gateway's loop.

No Linux counterpart (netlink's checks play this part: NETLINK_ROUTE changes need CAP_NET_ADMIN)."""

from __future__ import annotations

import io
import json
import os
import select
import socket
import stat
import subprocess
import sys
import time

import pytest
from ctlgw import ctl as run_ctl
from ctlgw import example_gateway, serving

from flowpath.cli import Environment, main
from flowpath.ctl import server as S
from flowpath.ctl.server import CtlServer, default_ctl_path, peer_allowed
from flowpath.errors import CtlError


@pytest.fixture(scope="module")
def gw():
    return example_gateway()


def _raw(path, data: bytes, timeout: float = 5.0) -> dict:
    """Send raw bytes, read the reply to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def _waiting(srv) -> list[int]:
    """The clients whose request is not answered yet."""
    return [fd for fd, c in srv.conns.items() if not c.lingering and c.out is None]


def test_the_socket_is_root_only_in_a_private_directory(gw):
    with serving(gw) as srv:
        st = os.stat(srv.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(srv.path.parent).st_mode) == 0o700
        path = srv.path
    assert not path.exists()  # close() removes it


def test_a_new_directory_is_made_0700(gw, tmp_path):
    srv = CtlServer(tmp_path / "run" / "g.sock", lambda r: S.reply(0))
    try:
        assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
    finally:
        srv.close()


def test_a_live_server_is_not_replaced_but_a_stale_socket_is(gw, tmp_path):
    with serving(gw) as srv:
        with pytest.raises(CtlError, match="already answers"):
            CtlServer(srv.path, lambda r: S.reply(0))
        assert run_ctl(srv, "conntrack", "-C")[0] == 0  # the first one still answers
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens: a gateway that died
    srv = CtlServer(stale, lambda r: S.reply(0, "up\n"))
    try:
        assert srv.service is not None and stat.S_ISSOCK(os.stat(stale).st_mode)
    finally:
        srv.close()
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    with pytest.raises(CtlError, match="not a socket"):
        CtlServer(plain, lambda r: S.reply(0))
    assert plain.read_text() == "mine"


def test_peer_check():
    """SO_PEERCRED: root and the gateway's own user; anyone the file lets in once mode opens it."""
    assert peer_allowed(0, 0, 0o600) and peer_allowed(1000, 1000, 0o600)
    assert not peer_allowed(1000, 0, 0o600) and not peer_allowed(1000, 0, 0o640)
    assert peer_allowed(1000, 0, 0o660) and peer_allowed(1000, 0, 0o606)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_non_root_peer_is_refused_even_through_an_open_file(gw):
    """The socket file made world-writable behind the gateway's back: SO_PEERCRED still refuses."""
    with serving(gw) as srv:
        os.chmod(srv.path.parent, 0o711)
        os.chmod(srv.path, 0o666)
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: uid nobody, raw socket calls only
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(str(srv.path))
                try:
                    s.sendall(b'{"argv": ["stats"]}\n')
                except BrokenPipeError:  # refused at once: the reply is waiting all the same
                    pass
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                os.write(wr, data)
            except BaseException as e:
                os.write(wr, json.dumps({"child": repr(e)}).encode())
            finally:
                os._exit(0)
        os.close(wr)
        data = b""
        while chunk := os.read(rd, 65536):
            data += chunk
        os.waitpid(pid, 0)
        r = json.loads(data)
        assert r["rc"] == 1 and "permission denied (uid 65534)" in r["err"] and r["out"] == ""
        assert run_ctl(srv, "conntrack", "-C")[0] == 0  # root still is served


def test_bad_bytes_and_oversize_requests_get_an_answer_not_a_crash(gw, monkeypatch):
    monkeypatch.setattr(S, "MAX_REQUEST_BYTES", 1 << 16)
    with serving(gw) as srv:
        assert _raw(srv.path, b"\xff\xfe not json\n")["rc"] == 2
        assert _raw(srv.path, b'{"argv": ["stats"],\n')["rc"] == 2
        r = _raw(srv.path, b'{"argv": ["' + b"x" * (1 << 17) + b'"]}\n')
        assert r["rc"] == 2 and "larger than" in r["err"]
        assert _raw(srv.path, b'{"argv": ["conntrack", "-C"]}\n') == {"rc": 0, "out": "1\n", "err": ""}


def test_a_failing_command_is_rc_1_and_the_server_goes_on(gw, tmp_path):
    def dispatch(req):
        if req["argv"] == ["boom"]:
            raise ZeroDivisionError("division by zero")
        return S.reply(0, "fine\n")

    srv = CtlServer(tmp_path / "b.sock", dispatch)
    try:
        out = []
        for req in (b'{"argv": ["boom"]}\n', b'{"argv": ["ok"]}\n'):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(srv.path))
            c.sendall(req)
            srv.service(srv.sock.fileno())  # accept
            (fd,) = _waiting(srv)
            srv.service(fd)  # read, dispatch, write
            out.append(json.loads(c.recv(65536)))
            c.close()
        assert out[0]["rc"] == 1 and "internal error: ZeroDivisionError" in out[0]["err"]
        assert out[1] == {"rc": 0, "out": "fine\n", "err": ""}
    finally:
        srv.close()


def test_a_client_that_stalls_is_dropped_without_blocking(gw, tmp_path, monkeypatch):
    """A client that sends half a request, or does not read a long reply, is dropped at its deadline;
    service() never waits for it."""
    srv = CtlServer(tmp_path / "s.sock", lambda r: S.reply(0, "x" * (8 << 20)))
    try:
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(srv.path))
        slow.sendall(b'{"argv": ["st')
        t = time.monotonic()
        srv.service(srv.sock.fileno())
        (fd,) = srv.conns
        srv.service(fd)  # half a request: nothing to do yet
        assert fd in srv.conns
        srv.expire(time.monotonic_ns() + S.REQUEST_TIMEOUT_NS)
        assert srv.conns == {}
        reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # asks, then never reads
        reader.connect(str(srv.path))
        reader.sendall(b'{"argv": ["stats"]}\n')
        srv.service(srv.sock.fileno())
        (fd,) = _waiting(srv)
        srv.service(fd)
        assert srv.conns[fd].out  # 8 MiB do not fit the socket buffer: the rest waits for POLLOUT
        assert (fd, select.POLLOUT) in srv.poll_events()
        srv.expire(time.monotonic_ns() + S.REPLY_TIMEOUT_NS)
        assert srv.conns == {}
        assert time.monotonic() - t < 2.0
        slow.close()
        reader.close()
    finally:
        srv.close()


def test_no_gateway_exits_1_with_a_hint(tmp_path):
    env = Environment(io.StringIO(), io.StringIO())
    path = tmp_path / "none.sock"
    assert main(["ctl", "--ctl", str(path), "stats"], env) == 1
    assert env.stderr.getvalue() == (f"flowpath: error: no flowpath gateway at {path} (is `flowpath run` "
                                     "running in this network namespace?)\n")  # fmt: skip


def test_ctl_help_has_examples(capsys):
    assert main(["ctl", "--help"], Environment(io.StringIO(), io.StringIO())) == 0  # click writes help itself
    out = capsys.readouterr().out
    assert "flowpath ctl conntrack -L" in out and "ip netns exec gw1 flowpath ctl stats" in out


def test_the_default_path_is_per_network_namespace():
    ino = os.stat("/proc/self/ns/net").st_ino
    assert default_ctl_path() == S.RUN_DIR / f"net-{ino}.sock"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_another_namespace_has_another_default_path():
    ns = f"fpt-{os.getpid()}-ctl"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        code = "from flowpath.ctl.server import default_ctl_path; print(default_ctl_path())"
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout  # fmt: skip
        assert out.strip().startswith(str(S.RUN_DIR / "net-")) and out.strip() != str(default_ctl_path())
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)

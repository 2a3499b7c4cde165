"""Running the app: the listening socket is bound here (a port in use is a clear error, port 0 picks a
free one and the URL printed is the real one), then uvicorn serves on it until Ctrl-C."""

from __future__ import annotations

import errno
import socket

from ..errors import GraftError

ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})
LIMIT_CONCURRENCY = 64  # connections served at once; more get 503 (bounded memory under a flood)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a GraftError that says what to change."""
    if not 0 <= port <= 65535:
        raise GraftError(f"--port {port}: use a port from 1 to 65535 (or 0 for any free port).")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise GraftError(f"--host {host!r}: not an address or a known host name ({error.strerror}); "
                         "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise GraftError(f"Port {port} on {host} is in use by another program; choose another with --port "
                             "(or --port 0 for any free port).") from None
        if error.errno in (errno.EACCES, errno.EPERM):
            raise GraftError(f"Port {port}: this user may not listen on ports below 1024; use --port 8000 or "
                             "another above 1023.") from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise GraftError(f"--host {host}: this machine has no such address; use 127.0.0.1 or 0.0.0.0.") from None
        raise
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host == "0.0.0.0" else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(app, sock: socket.socket, *, access_log: bool = False) -> None:
    """Serve `app` on `sock` until Ctrl-C (or SIGTERM), then close the model's worker."""
    import uvicorn

    config = uvicorn.Config(app, log_level="info" if access_log else "warning", access_log=access_log,
                            limit_concurrency=LIMIT_CONCURRENCY, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        batcher = getattr(app.state, "batcher", None)
        if batcher is not None:
            batcher.close()

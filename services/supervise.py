"""Keep one process of `rapport run` going: restart it, with back-off, whenever it dies.

``python -m services.supervise NAME COMMAND...`` runs COMMAND, and runs it again when it
exits without being asked to: a crash, a kill -9, a worker that stopped in the middle of a
batch. The broker and the other processes keep running meanwhile. The delay doubles from
1 s to 30 s while the process keeps dying, and is back at 1 s once it has run a minute.
A process that refuses its settings (exit 2) is not restarted: `rapport run` then stops,
with its message on the screen. SIGTERM or SIGINT stop the process and this supervisor.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STEADY_S = 60.0  # a run this long resets the delay
REFUSED = 2  # the exit code of a process that refuses its settings


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def keep(name: str, command: list[str]) -> int:
    """Run ``command`` until asked to stop; return its last exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = FIRST_DELAY_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        returncode = child.wait()
        if stopping:
            return 0 if returncode < 0 else returncode  # < 0: the signal it was asked with
        if returncode == REFUSED:
            print(f"{name} refused to start (exit {REFUSED}): not restarted", flush=True)
            return returncode
        if time.monotonic() - started >= STEADY_S:
            delay = FIRST_DELAY_S
        print(f"{name} {describe(returncode)}; restarting in {delay:.0f} s", flush=True)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return returncode
        delay = min(2 * delay, MAX_DELAY_S)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python -m services.supervise NAME COMMAND...")
    sys.exit(keep(sys.argv[1], sys.argv[2:]))


if __name__ == "__main__":
    main()

"""services.supervise: a process that dies is started again, later each time; one that
refuses its settings is not; SIGTERM stops both the supervisor and the process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, wait_until

# Dies twice (exit 1), then stays up until stopped.
FLAKY = """
import pathlib, sys, time
runs = pathlib.Path(sys.argv[1])
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
if len(runs.read_text()) < 3:
    sys.exit(1)
time.sleep(60)
"""


def supervise(*command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.supervise", "flaky", *command],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_dying_process_is_restarted_with_back_off_until_stopped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = supervise(sys.executable, "-c", FLAKY, str(runs))
    wait_until(lambda: runs.exists() and runs.read_text() == "xxx", timeout=15)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.splitlines() == [
        "flaky exited with code 1; restarting in 1 s",
        "flaky exited with code 1; restarting in 2 s",
    ]


def test_a_process_that_refuses_its_settings_is_not_restarted() -> None:
    proc = supervise(sys.executable, "-c", "import sys; sys.exit(2)")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert out.strip() == "flaky refused to start (exit 2): not restarted"

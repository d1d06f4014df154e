"""Time from launching `sage-tui` to its first frame on the terminal, beside a baseline.

Each program runs in a pseudo-terminal (120x30); the clock stops when the text that only a
fully drawn frame holds appears in its output. The baseline is the smallest Textual app with a
header line and a footer, so the difference is what sage-tui itself adds to start-up.

    .venv/bin/python bench/first_frame.py [--runs 7]

Cases: `sage-tui` on a home whose built-in model is ready (the usual launch) and on an empty
home (first launch: the model is provisioned in the background after the first frame).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = """
from textual.app import App
from textual.widgets import Footer, Static
class Hello(App):
    BINDINGS = [("1", "bell", "Finetune")]
    def compose(self):
        yield Static(" 1 Finetune  2 Models  3 Chat ")
        yield Footer()
Hello().run()
"""


def first_frame_seconds(
    argv: list[str], marker: bytes, env: dict[str, str], timeout: float = 30
) -> float:
    """Seconds from spawn until `marker` shows in the program's terminal output."""
    pid, fd = pty.fork()
    if pid == 0:  # child: become the program
        os.execvpe(argv[0], argv, env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    started = time.perf_counter()
    seen = b""
    try:
        while time.perf_counter() - started < timeout:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                if marker in seen:
                    return time.perf_counter() - started
        raise RuntimeError(f"{argv} drew no frame within {timeout} s")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    python = sys.executable
    script = shutil.which("sage-tui", path=str(Path(python).parent)) or "sage-tui"
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"}
    ready_home = tempfile.mkdtemp(prefix="sage-bench-")
    subprocess.run(
        [script, "--home", ready_home, "models", "pull", "smollm2-135m-instruct"],
        check=True,
        capture_output=True,
    )

    cases = {
        "baseline: minimal Textual app": ([python, "-c", BASELINE], None),
        "sage-tui, model ready": ([script, "--home", ready_home], None),
        "sage-tui, first launch (empty home)": ([script], "fresh"),
    }
    marker = b"Finetune"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{'case':<40} {'median':>8} {'min':>8} {'max':>8}   ({args.runs} runs)")
    for name, (argv, home) in cases.items():
        times = []
        for _ in range(args.runs):
            if home == "fresh":
                fresh = tempfile.mkdtemp(prefix="sage-bench-fresh-")
                run_argv = [*argv, "--home", fresh]
            else:
                fresh, run_argv = None, argv
            times.append(first_frame_seconds(run_argv, marker, env))
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
        print(f"{name:<40} {statistics.median(times):8.3f} {min(times):8.3f} {max(times):8.3f}")
    shutil.rmtree(ready_home, ignore_errors=True)


if __name__ == "__main__":
    main()

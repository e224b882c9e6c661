"""Quiet, predictable stop of a node process on SIGINT (once or twice) and SIGTERM, at any time.

Ctrl-C in a terminal running `ros2 launch` delivers two SIGINTs to every node: the terminal's
(to the whole process group) and then launch's own. Python's default turns each into a
KeyboardInterrupt wherever the main thread happens to be, so the second one used to interrupt
the summary or `destroy_node()` with a traceback, or kill the process (`exit code -2`); a signal
during the imports (torch, scipy: seconds) gave an import traceback.

Here the first SIGINT/SIGTERM asks the node to stop (`STOP.requested`); `run_node` notices
within 0.1 s, prints the summary, destroys the node and exits 0. The second signal is ignored
(the node is already stopping). A third means the stop itself hangs: the process exits at once
with 128 + signal number and one line on stderr, never a traceback. Before the node runs (while
the node module imports) the first signal ends the start-up right away, also quietly, exit 0.

This module imports nothing heavy, so the console entry points (nodes/entry.py) install it
before anything else.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
FORCE_AFTER = 3  # the third signal exits immediately


class StartupInterrupted(BaseException):
    """Raised from the handler while the node module is still importing (BaseException, like
    KeyboardInterrupt, so a library's `except Exception` does not swallow it)."""


class StopRequest:
    def __init__(self) -> None:
        self.signal: str | None = None  # name of the first signal
        self.count = 0
        self.starting_up = False  # raise StartupInterrupted instead of only noting the request
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, _frame) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = name
            if self.starting_up:
                self.starting_up = False
                raise StartupInterrupted(name)
            return
        if self.count >= FORCE_AFTER:
            try:
                os.write(2, f"{os.path.basename(sys.argv[0] or 'node')}: {name} #{self.count} while stopping; "
                            "exiting now\n".encode())
            finally:
                os._exit(128 + signum)

    def install(self) -> StopRequest:
        """Route SIGINT and SIGTERM here (main thread only; later calls do nothing)."""
        if not self._installed and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self.handle)
            self._installed = True
        return self

    @property
    def installed(self) -> bool:
        return self._installed


    def ignore_from_now_on(self) -> None:
        """The process is finishing: ignore SIGINT/SIGTERM for good. Python restores the default
        (deadly) handlers during interpreter finalisation, which takes seconds after torch was
        imported; a late signal there would end the process with -2 instead of 0. Ignored
        signals stay ignored through finalisation."""
        if self._installed and threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)


STOP = StopRequest()


def install() -> StopRequest:
    return STOP.install()

"""The node entry point's start-up import (nodes/entry.py import_node_module): a stop signal during
the import ends start-up quietly even when the interrupted library re-raises the handler's exception
as something else (numpy turns it into an ImportError); an import error without a signal stays an
error. Each case runs in its own interpreter, since the handlers replace the process's own."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The module under import interrupts itself, then behaves like the library named in each case.
_LIBRARIES = {
    # numpy: the C extension's import of `datetime` fails with the handler's exception and the
    # package re-raises an ImportError from it
    "converts": """
        import os, signal, time
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException as exc:
            raise ImportError("PyCapsule_Import could not import module 'datetime'") from exc
    """,
    # a library that catches everything and carries on; the import itself succeeds
    "swallows": """
        import os, signal, time
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except BaseException:
            pass
    """,
    "passes_on": """
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    """,
    "broken_without_signal": """
        raise ImportError("a real missing dependency")
    """,
}

_DRIVER = """
import sys
from squeeze_perception import shutdown
from squeeze_perception.nodes.entry import import_node_module
stop = shutdown.install()
module = import_node_module("fake_library", stop)
print("module", module is not None, "requested", stop.requested, "signal", stop.signal)
"""


def _import_in_child(tmp_path, library: str) -> subprocess.CompletedProcess:
    (tmp_path / "fake_library.py").write_text(textwrap.dedent(_LIBRARIES[library]))
    return subprocess.run([sys.executable, "-c", _DRIVER], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("library", ["converts", "passes_on"])
def test_signal_during_import_gives_no_module_and_no_traceback(tmp_path, library):
    done = _import_in_child(tmp_path, library)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "module False requested True signal SIGINT" in done.stdout, done.stdout


def test_a_library_that_swallows_the_signal_still_leaves_the_request(tmp_path):
    done = _import_in_child(tmp_path, "swallows")
    assert done.returncode == 0, done.stderr
    # run() sees stop.requested after the import and stops there
    assert "module True requested True signal SIGINT" in done.stdout, done.stdout


def test_an_import_error_without_a_signal_is_raised(tmp_path):
    done = _import_in_child(tmp_path, "broken_without_signal")
    assert done.returncode == 1 and "a real missing dependency" in done.stderr, done.stderr

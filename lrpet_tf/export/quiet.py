"""Keep the TFLite converter's console output away from the user."""

import contextlib
import io
import os
import sys
import tempfile
import warnings

__all__ = ["captured_output"]


@contextlib.contextmanager
def captured_output():
    """Captures what the block writes to stdout/stderr, from Python and C++.

    Both file descriptors 1 and 2 and Python's `sys.stdout`/`sys.stderr` (which
    may not write to them, e.g. under pytest or in a notebook) are redirected,
    and Python warnings raised in the block are silenced.

    Yields a list that, after the block, holds the captured text as its one
    element, so a caller can show it when the block fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    captured = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        python_text = io.StringIO()
        try:
            with (
                contextlib.redirect_stdout(python_text),
                contextlib.redirect_stderr(python_text),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(python_text.getvalue() + sink.read().decode("utf-8", "replace"))

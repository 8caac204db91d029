"""Keep the TFLite converter's console output away from the user."""

import contextlib
import io
import logging
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

    Python logging is left as it was. TensorFlow logs through absl, and absl
    calls `logging.basicConfig()` when the root logger has no handler: inside
    the redirect that would bind a new root handler to the captured stream,
    and every later warning of the program would vanish into it. So while the
    block runs the root logger holds a `NullHandler` (absl then configures
    nothing), and afterwards any handler added in the block that writes to the
    captured stream is removed again.

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
        placeholder = _hold_root_logger()
        try:
            with (
                contextlib.redirect_stdout(python_text),
                contextlib.redirect_stderr(python_text),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                yield captured
        finally:
            _release_root_logger(placeholder, python_text)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.append(python_text.getvalue() + sink.read().decode("utf-8", "replace"))


def _hold_root_logger():
    """Gives a handler-less root logger a `NullHandler`, so nothing calls basicConfig."""
    root = logging.getLogger()
    if root.handlers:
        return None
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    return placeholder


def _release_root_logger(placeholder, stream):
    """Removes the placeholder and every handler left writing to the captured `stream`."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if handler is placeholder or getattr(handler, "stream", None) is stream:
                logger.removeHandler(handler)

"""What the example scripts print besides Keras: a quiet start, stage headers, progress.

* `quiet_tensorflow_startup()`: each script calls it first thing when run
  as a script, before TensorFlow is imported. TensorFlow prints about nine
  C++ lines while it loads (oneDNN, "Could not find cuda drivers", CPU
  instructions, half of them twice, and on a machine without a GPU
  "failed call to cuInit ... UNKNOWN ERROR (303)"), and most of them
  ignore `TF_CPP_MIN_LOG_LEVEL` (they come before TensorFlow's logging is
  set up). So this sets that variable (to
  2: errors only) unless the user did, imports TensorFlow and lists its
  devices with the process's stderr captured, and writes back every
  captured line but those known start-up messages, and it sets the
  "tensorflow" Python logger to WARNING. `--tf_logs` turns all of that off.
* `Stages`: "stage 2/5: sparsity training, 10 epochs" before each stage of
  a run and a table of the time per stage at the end.
* `Progress`: one line per item of a long step that Keras does not report
  (export, verification, latency timing), with an estimate of the time left.

This module imports no TensorFlow at import time: it has to run before it.
"""

import contextlib
import logging
import os
import sys
import tempfile
import time

from absl import flags

__all__ = ["Progress", "Stages", "define_flags", "quiet_tensorflow_startup"]

FLAGS = flags.FLAGS

# TensorFlow's start-up messages, harmless on a CPU-only machine
# (docs/examples.md says what each means).
STARTUP_MESSAGES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
)
_NO_GPU = "failed call to cuInit"
_TRUE = ("", "true", "t", "1")


def define_flags():
    """--tf_logs (defined once, whichever script asks first)."""
    if "tf_logs" not in FLAGS:
        flags.DEFINE_bool(
            "tf_logs",
            False,
            "Show TensorFlow's own C++ start-up and INFO/WARNING lines (hidden by default; "
            "harmless on a CPU-only machine, see docs/examples.md).",
        )


def wants_tf_logs(argv):
    """Whether the command line turns TensorFlow's logs on (`--tf_logs`, as absl parses it).

    Read from `argv` before absl parses the flags, since TensorFlow is
    imported before that.
    """
    wanted = False
    for arg in argv[1:]:
        if arg == "--":
            break
        if not arg.startswith("-"):
            continue
        name, _, value = arg.lstrip("-").partition("=")
        if name == "tf_logs":
            wanted = value.lower() in _TRUE
        elif name == "notf_logs" and not value:
            wanted = False
    return wanted


def quiet_tensorflow_startup(argv=None):
    """Keeps TensorFlow's C++ start-up and INFO/WARNING lines off the console.

    Call it in a script's entry point before anything imports TensorFlow.
    With `--tf_logs` in `argv` it sets `TF_CPP_MIN_LOG_LEVEL=0` (everything)
    and filters nothing. Otherwise `TF_CPP_MIN_LOG_LEVEL` is set to 2 (C++
    errors only) unless already set, and TensorFlow is imported and its
    devices listed (which is when CUDA is tried) with stderr captured; the
    captured lines are written back except `STARTUP_MESSAGES`. If a "failed
    call to cuInit" was among them, one line says TensorFlow found no GPU.
    The "tensorflow" Python logger is set to WARNING (its INFO lines off).
    A script is the program, so it may set these; the library never does.

    Args:
        argv: The command line (default `sys.argv`).

    Returns:
        The lines left out (empty with `--tf_logs`).
    """
    argv = sys.argv if argv is None else argv
    if wants_tf_logs(argv):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return []
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return []  # too late to catch its start-up lines
    with _stderr_without(STARTUP_MESSAGES) as dropped:
        import tensorflow as tf

        tf.config.list_physical_devices()
    # TensorFlow's Python INFO lines too (absl's handler, which the scripts
    # run under, would print e.g. tf_keras's "Sharding callback duration"
    # at every checkpoint); its warnings stay.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    if any(_NO_GPU in line for line in dropped):
        print(
            "TensorFlow found no GPU and runs on the CPU "
            "(its start-up messages are hidden: --tf_logs shows them).",
            file=sys.stderr,
            flush=True,
        )
    return dropped


@contextlib.contextmanager
def _stderr_without(messages):
    """Captures file descriptor 2 (C++ and Python writes) and writes back all but `messages`.

    Yields the list that receives the lines left out.
    """
    dropped = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to filter
        yield dropped
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield dropped
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = []
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                (dropped if any(m in line for m in messages) else kept).append(line)
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _seconds(value):
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {value % 60:02.0f} s"


def plural(count, word):
    """`"1 epoch"`, `"10 epochs"`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def export_stage(method, quantizations):
    """`(title, detail)` of the last stage of train_lrpet.py and compress.py."""
    title = (
        "factorize, fold BN, export and evaluate"
        if method == "lrpet"
        else "fold BN, export and evaluate"
    )
    detail = plural(len(quantizations), ".tflite file") + f" ({', '.join(quantizations)})"
    return title, detail


class Stages:
    """Headers "stage i/n: what" before each stage of a run, and the time per stage.

    Example:

        stages = Stages(2)
        with stages.stage("LRPET training", "30 epochs"):
            model.fit(...)
        stages.skip("export", "done before")
        print(stages.summary())

    Attributes:
        rows: One dict per stage so far: `stage` (its number), `name`,
            `detail`, `status` ("run" or "skipped") and `seconds` (None when
            skipped).
    """

    def __init__(self, total, out=None):
        self.total = total
        self.rows = []
        self._out = out

    def _print(self, text):
        print(text, file=self._out or sys.stdout, flush=True)

    def _start(self, name, detail, status):
        row = {
            "stage": len(self.rows) + 1,
            "name": name,
            "detail": detail,
            "status": status,
            "seconds": None,
        }
        self.rows.append(row)
        header = f"stage {row['stage']}/{self.total}: {name}"
        self._print(f"{header}, {detail}" if detail else header)
        return row

    @contextlib.contextmanager
    def stage(self, name, detail=""):
        """Prints the stage's header and times the block; yields the stage's row."""
        row = self._start(name, detail, "run")
        start = time.perf_counter()
        try:
            yield row
        finally:
            row["seconds"] = time.perf_counter() - start

    def skip(self, name, reason):
        """Prints the header of a stage that does not run, and why."""
        return self._start(name, f"skipped: {reason}", "skipped")

    def summary(self):
        """A table of the time per stage and the total, as text."""
        from lrpet_tf.graph import format_table  # TensorFlow is loaded by now

        rows = [
            [f"{r['stage']}/{self.total} {r['name']}", _seconds(r["seconds"]), r["status"]]
            for r in self.rows
        ]
        total = sum(r["seconds"] or 0.0 for r in self.rows)
        rows.append(["total", _seconds(total), ""])
        return format_table(["stage", "time", "status"], rows, title="Time per stage:")


class Progress:
    """One line per item of a long step, with an estimate of the time left.

    The line is printed when an item starts, so a slow one shows what runs:
    "  [2/3] compact_float16.tflite: convert, verify, accuracy (about 4 s left)".
    The estimate (for items that take about as long as each other; turn it
    off with `estimate=False` for unlike steps) is the mean time of the
    finished items times the items left, this one included; the first item
    has none.

    Example:

        progress = Progress(len(files))
        for name in files:
            progress.start(f"{name}: convert, verify")
            export(name)
    """

    def __init__(self, total, estimate=True, out=None):
        self.total = total
        self.estimate = estimate
        self.count = 0
        self._out = out
        self._begin = None

    def start(self, what):
        """Prints the next item's line (and so ends the previous item)."""
        now = time.perf_counter()
        if self._begin is None:
            self._begin = now
        estimate = ""
        if self.count and self.estimate:
            left = (now - self._begin) / self.count * (self.total - self.count)
            estimate = f" (about {_seconds(left)} left)"
        self.count += 1
        print(
            f"  [{self.count}/{self.total}] {what}{estimate}",
            file=self._out or sys.stdout,
            flush=True,
        )

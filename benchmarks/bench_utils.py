"""Timing, machine description, tables and result files shared by the benchmarks.

The machines these benchmarks run on are shared, so every number the
benchmarks report is a ratio of two things timed side by side: the
candidates run interleaved (one call of each per round, the order rotated
every round so none always runs first), after untimed warm-up rounds, and a
ratio is the median over rounds of the per-round ratio. The load average is
recorded next to every table.
"""

import datetime
import fcntl
import functools
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

__all__ = [
    "BENCHMARKS_DIR",
    "REPO_DIR",
    "SAVED_MODELS_DIR",
    "add_examples_to_path",
    "as_study",
    "command_line",
    "source_revision",
    "interleaved",
    "interleaved_latency",
    "interleaved_times",
    "load_average",
    "machine_info",
    "machine_markdown",
    "markdown_table",
    "paired_ratio",
    "portable",
    "read_study",
    "round_medians",
    "save_figure",
    "summarize",
    "to_json",
    "write_results",
    "write_run",
]

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCHMARKS_DIR)
SAVED_MODELS_DIR = os.path.join(REPO_DIR, "saved_models")
_EXAMPLES_DIR = os.path.join(REPO_DIR, "examples")
_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "numpy")


def add_examples_to_path():
    """Puts examples/ on sys.path, for the benchmarks that reuse its `example_*` modules.

    The examples are scripts, not a package; the benchmarks share their data
    loading, recipes and training loop instead of keeping copies.
    """
    if _EXAMPLES_DIR not in sys.path:
        sys.path.insert(0, _EXAMPLES_DIR)


def command_line(argv=None, drop=()):
    """The command that ran a benchmark, as RESULTS.md gives it.

    `[TF_USE_LEGACY_KERAS=1 ]PYTHONPATH=. python benchmarks/<script> <args>`,
    the prefix when tf_keras is in use, without the arguments that start
    with one of `drop`.
    """
    from lrpet_tf import keras  # here: the rest of bench_utils needs no TensorFlow

    argv = sys.argv if argv is None else argv
    args = [arg for arg in argv[1:] if not arg.startswith(tuple(drop))]
    prefix = "" if keras.__version__.startswith("3.") else "TF_USE_LEGACY_KERAS=1 "
    script = os.path.basename(argv[0])
    return " ".join([f"{prefix}PYTHONPATH=. python benchmarks/{script}", *args])


def load_average():
    """The 1, 5 and 15 minute load averages, rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avxvnni")
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def source_revision():
    """The git commit of the checkout and whether `lrpet_tf/` has uncommitted changes."""
    root = REPO_DIR

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "lrpet_tf")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "lrpet_tf_modified": None}
    return {"commit": commit or None, "lrpet_tf_modified": bool(dirty)}


def machine_info():
    """What the numbers were measured on: CPU, cores, memory, versions, date, load.

    Returns:
        A JSON-serializable dict.
    """
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    memory_gib = None
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": load_average(),
        "source": source_revision(),
    }


def machine_markdown(info):
    """One markdown paragraph describing `machine_info()`."""
    v = info["versions"]
    flags = "/".join(info["cpu_flags"]) or "n/a"
    source = info.get("source") or {}
    revision = ""
    if source.get("commit"):
        modified = " + uncommitted lrpet_tf/ changes" if source.get("lrpet_tf_modified") else ""
        revision = f"; lrpet_tf at {source['commit']}{modified}"
    return (
        f"Machine: {info['cpu']} ({flags}), {info['cores']} cores, "
        f"{info['memory_gib']} GiB; Python {v['python']}, TensorFlow {v['tensorflow']}, "
        f"Keras {v['keras']}, ai-edge-litert {v['ai-edge-litert']}, NumPy {v['numpy']}; "
        f"{info['date']}{revision}."
    )


def interleaved(calls, rounds, warmup=0):
    """Calls several callables round by round, the order rotated every round.

    Every round calls each candidate once; the first of them changes every
    round, so none always runs first (or right after the same neighbour).
    `warmup` untimed rounds come first.

    Args:
        calls: Dict name -> zero-argument callable.
        rounds: Rounds whose return values are kept.
        warmup: Rounds before them whose return values are dropped.

    Returns:
        Dict name -> list of the `rounds` return values, in round order.
    """
    names = list(calls)
    values = {name: [] for name in names}
    for i in range(warmup + rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            value = calls[name]()
            if i >= warmup:
                values[name].append(value)
    return values


def interleaved_times(candidates, rounds, warmup=1, before=None, cpu_times=None):
    """Times several Python callables interleaved: one call of each per round.

    For .tflite files use `interleaved_latency` (lrpet_tf's timer) instead.

    Args:
        candidates: Dict name -> zero-argument callable.
        rounds: Timed rounds.
        warmup: Untimed rounds before them (tracing, caches).
        before: Optional dict name -> zero-argument callable run untimed
            right before each (warm-up or timed) call of that candidate,
            e.g. to restore state the candidate changes.
        cpu_times: Optional dict, filled with name -> float64 array of this
            process's CPU seconds (all threads, `time.process_time`) per call:
            unlike wall time, barely affected by other processes' load.

    Returns:
        Dict name -> float64 array of `rounds` seconds per call.
    """
    before = before or {}

    def timed(name):
        def call():
            if name in before:
                before[name]()
            start_cpu = time.process_time()
            start = time.perf_counter()
            candidates[name]()
            return time.perf_counter() - start, time.process_time() - start_cpu

        return call

    samples = interleaved({name: timed(name) for name in candidates}, rounds, warmup)
    if cpu_times is not None:
        cpu_times.update({n: np.asarray([s[1] for s in v], np.float64) for n, v in samples.items()})
    return {n: np.asarray([s[0] for s in v], np.float64) for n, v in samples.items()}


def interleaved_latency(
    files,
    rounds,
    warmup_rounds=0,
    runs=1,
    warmup=1,
    repeats=1,
    num_threads=1,
    clock="wall",
    reload=False,
):
    """Times .tflite files round by round with lrpet_tf's timer.

    Each round measures every file once, in the rotated order of
    `interleaved`, with `lrpet_tf.export.LatencyTimer.measure(runs, warmup,
    repeats, clock)`: `warmup` untimed invokes, then `runs` timed runs of one
    batch (times `repeats`). So the drift of a shared machine's load hits
    every file alike, and per-round ratios (`paired_ratio`) cancel most of it.

    Args:
        files: Dict name -> .tflite path, or (without `reload`) a
            `LatencyTimer` to reuse, whose own thread count then holds.
        rounds: Timed rounds.
        warmup_rounds: Untimed rounds first.
        runs, warmup, repeats, clock: Of each measurement (see
            `LatencyTimer.measure`).
        num_threads: Interpreter threads.
        reload: Load every file afresh each round (`lrpet_tf.measure_latency`:
            a new interpreter, whose first warm-up invoke packs the weights).
            Otherwise each file is loaded once (one `LatencyTimer` per file)
            and its warm-up invokes re-warm the caches the other files' rounds
            took over.

    Returns:
        Dict name -> list of one `lrpet_tf.LatencyResult` per timed round.
    """
    import lrpet_tf  # here: the rest of bench_utils needs no TensorFlow

    settings = dict(runs=runs, warmup=warmup, repeats=repeats, clock=clock)
    if reload:
        calls = {
            name: functools.partial(
                lrpet_tf.measure_latency, path, num_threads=num_threads, **settings
            )
            for name, path in files.items()
        }
    else:
        timers = {
            name: f
            if isinstance(f, lrpet_tf.export.LatencyTimer)
            else lrpet_tf.export.LatencyTimer(f, num_threads=num_threads)
            for name, f in files.items()
        }
        calls = {name: functools.partial(t.measure, **settings) for name, t in timers.items()}
    return interleaved(calls, rounds, warmup_rounds)


def round_medians(results):
    """Dict name -> float64 array of each round's `median_ms` (`interleaved_latency`'s output)."""
    return {name: np.asarray([r.median_ms for r in rs], np.float64) for name, rs in results.items()}


def summarize(seconds):
    """Median, 10th and 90th percentile of a sample of seconds, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p10_ms": float(np.percentile(ms, 10)),
        "p90_ms": float(np.percentile(ms, 90)),
        "samples": int(ms.size),
    }


def paired_ratio(numerator, denominator):
    """Median and quartiles over rounds of `numerator[i] / denominator[i]`.

    Both arrays come from one `interleaved_times` call, so sample `i` of each
    ran in the same round, seconds apart: the per-round ratio cancels most of
    the drift of a shared machine's load.
    """
    ratios = np.asarray(numerator, np.float64) / np.asarray(denominator, np.float64)
    return {
        "median": float(np.median(ratios)),
        "q25": float(np.percentile(ratios, 25)),
        "q75": float(np.percentile(ratios, 75)),
    }


def _cell(value, digits):
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def markdown_table(headers, rows, digits=2):
    """A GitHub markdown table; floats get `digits` decimals, ints thousands separators."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


def portable(value, significant=6, decimals=4):
    """A JSON-ready copy of `value` fit to commit: compact and free of local paths.

    Floats are rounded to `significant` significant digits, but never to
    fewer than `decimals` decimals (so a figure a table prints with 2 or 3
    decimals keeps them); NumPy values become Python ones, tuples lists. A
    string that is an absolute path becomes relative to the repository, or
    its bare file name outside it.
    """
    if isinstance(value, dict):
        return {str(k): portable(v, significant, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, significant, decimals) for v in value]
    if isinstance(value, np.ndarray):
        return portable(value.tolist(), significant, decimals)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == 0 or not math.isfinite(value):
            return value
        return round(value, max(decimals, significant - 1 - math.floor(math.log10(abs(value)))))
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        if value == REPO_DIR or value.startswith(REPO_DIR + os.sep):
            return os.path.relpath(value, REPO_DIR)
        return os.path.basename(value)
    return value


def to_json(value, width=100):
    """Compact JSON text that still reads (and diffs) line by line.

    A list or object that fits in `width` columns is written on one line;
    a larger one gets one line per group of items that fit together, and
    an item that does not fit on one line starts a line of its own.
    """

    def render(v, level):
        flat = json.dumps(v, separators=(",", ":"))
        if not isinstance(v, (dict, list)) or not v or level + len(flat) <= width:
            return flat
        pad = " " * (level + 1)
        if isinstance(v, dict):
            items = [f"{json.dumps(k)}:{render(x, level + 1)}" for k, x in v.items()]
        else:
            items = [render(x, level + 1) for x in v]
        lines, line = [], ""
        for item in items:
            if line and ("\n" in item or len(pad) + len(line) + 1 + len(item) > width):
                lines.append(line)
                line = ""
            line = f"{line},{item}" if line else item
            if "\n" in item:
                lines.append(line)
                line = ""
        if line:
            lines.append(line)
        brackets = "{}" if isinstance(v, dict) else "[]"
        body = ",\n".join(pad + text for text in lines)
        return brackets[0] + "\n" + body + "\n" + " " * level + brackets[1]

    return render(value, 0) + "\n"


def _paths(name, output_dir):
    output_dir = output_dir or os.path.join(BENCHMARKS_DIR, "results")
    os.makedirs(output_dir, exist_ok=True)
    return os.path.join(output_dir, f"{name}.json"), os.path.join(output_dir, f"{name}.md")


def write_results(name, payload, markdown, output_dir=None, compact=False):
    """Writes `<output_dir>/<name>.json` and `<output_dir>/<name>.md`.

    Args:
        name: File stem.
        payload: JSON-serializable results.
        markdown: The markdown fragment (tables) for RESULTS.md.
        output_dir: Defaults to `benchmarks/results`.
        compact: Write `portable(payload)` as `to_json` does (the form of
            the committed result files) instead of everything indented.

    Returns:
        `(json_path, markdown_path)`.
    """
    json_path, md_path = _paths(name, output_dir)
    with open(json_path, "w", encoding="utf-8") as f:
        if compact:
            f.write(to_json(portable(payload)))
        else:
            json.dump(payload, f, indent=1, default=_json_default)
            f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown.rstrip() + "\n")
    return json_path, md_path


def as_study(data, name, run="main"):
    """A study file's content: `{"study": name, "runs": {run name: results}}`.

    A results dict of one run (the form before studies kept several runs)
    becomes the study's run `run`.
    """
    if isinstance(data, dict) and isinstance(data.get("runs"), dict) and "study" in data:
        return data
    return {"study": name, "runs": {run: data}}


def read_study(path, name, run="main"):
    """`as_study` of the JSON file at `path`."""
    with open(path, encoding="utf-8") as f:
        return as_study(json.load(f), name, run)


def write_run(name, run, payload, render, output_dir=None):
    """Adds one run to a study that keeps several: `<name>.json` and `<name>.md`.

    The JSON holds `{"study": name, "runs": {run name: portable(results)}}`;
    a run of the same name is replaced in place, a new one appended. The
    file is locked while it is read and rewritten, so runs that finish side
    by side (several seeds at once) all land in it.

    Args:
        name: File stem (the study).
        run: The run's name, e.g. `e15_nostem_s1`.
        payload: Its results.
        render: Function study dict -> the markdown of the whole study.
        output_dir: Defaults to `benchmarks/results`.

    Returns:
        The study dict written.
    """
    json_path, md_path = _paths(name, output_dir)
    with open(json_path, "a+", encoding="utf-8") as f:  # created if missing, not emptied
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        study = as_study(json.loads(text), name) if text.strip() else {"study": name, "runs": {}}
        study["runs"][run] = portable(payload)
        markdown = render(study)
        f.truncate(0)  # (appending writes then start at 0)
        f.write(to_json(study))
        f.flush()
        with open(md_path, "w", encoding="utf-8") as md:
            md.write(markdown.rstrip() + "\n")
    return study


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def save_figure(fig, path):
    """Saves a matplotlib figure as PNG (150 dpi, tight) and closes it."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path

"""Timing, machine description, tables and result files shared by the benchmarks.

The machines these benchmarks run on are shared, so every number the
benchmarks report is a ratio of two things timed side by side: the
candidates run interleaved (one call of each per round, the order rotated
every round so none always runs first), after untimed warm-up rounds, and a
ratio is the median over rounds of the per-round ratio. The load average is
recorded next to every table.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

__all__ = [
    "BENCHMARKS_DIR",
    "command_line",
    "source_revision",
    "interleaved_times",
    "load_average",
    "machine_info",
    "machine_markdown",
    "markdown_table",
    "paired_ratio",
    "save_figure",
    "summarize",
    "write_results",
]

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
_PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "numpy")


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
    root = os.path.dirname(BENCHMARKS_DIR)

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


def interleaved_times(candidates, rounds, warmup=1, inner=1, before=None, cpu_times=None):
    """Times several callables interleaved: one call of each per round.

    Each round calls every candidate once (timed: `inner` back-to-back calls,
    divided by `inner`), rotating the order every round. `warmup` untimed
    rounds come first (tracing, XNNPACK weight packing, caches).

    Args:
        candidates: Dict name -> zero-argument callable.
        rounds: Timed rounds.
        warmup: Untimed rounds before them.
        inner: Calls per timed sample (for very short calls, so the timer's
            own cost is negligible).
        before: Optional dict name -> zero-argument callable run untimed
            right before each (warm-up or timed) sample of that candidate,
            e.g. to restore state the candidate changes.
        cpu_times: Optional dict, filled with name -> float64 array of this
            process's CPU seconds (all threads, `time.process_time`) per call:
            unlike wall time, barely affected by other processes' load.

    Returns:
        Dict name -> float64 array of `rounds` seconds per call.
    """
    names = list(candidates)
    before = before or {}
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for i in range(warmup + rounds):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            if name in before:
                before[name]()
            fn = candidates[name]
            start_cpu = time.process_time()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            elapsed = (time.perf_counter() - start) / inner
            elapsed_cpu = (time.process_time() - start_cpu) / inner
            if i >= warmup:
                times[name].append(elapsed)
                cpu[name].append(elapsed_cpu)
    if cpu_times is not None:
        cpu_times.update({name: np.asarray(t, np.float64) for name, t in cpu.items()})
    return {name: np.asarray(t, np.float64) for name, t in times.items()}


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


def write_results(name, payload, markdown, output_dir=None):
    """Writes `<output_dir>/<name>.json` and `<output_dir>/<name>.md`.

    Args:
        name: File stem.
        payload: JSON-serializable results.
        markdown: The markdown fragment (tables) for RESULTS.md.
        output_dir: Defaults to `benchmarks/results`.

    Returns:
        `(json_path, markdown_path)`.
    """
    output_dir = output_dir or os.path.join(BENCHMARKS_DIR, "results")
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{name}.json")
    md_path = os.path.join(output_dir, f"{name}.md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=_json_default)
        f.write("\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown.rstrip() + "\n")
    return json_path, md_path


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

"""Dense vs compact .tflite latency by two timers: `measure_latency` and `litert-benchmark`.

The files are the ones an Android app would ship (`export_tflite` defaults:
static batch 1, named outputs), float32 and full-integer int8 with int8
input and output tensors, of a dense model and of its factorization with
every Conv2D at rank ratio r/K (`lrpet_tf.factorize`, BatchNormalization
folded). Each file is timed, single-threaded on XNNPACK, by two independent
timers side by side in one run:

* `lrpet_tf.measure_latency`: the Python `ai_edge_litert` Interpreter,
  `invoke()` timed with `perf_counter`;
* `litert-benchmark`: the benchmark CLI that ai-edge-litert ships, run as a
  subprocess (LiteRT's CompiledModel API on its CPU accelerator), which
  reports a median over its own runs (rounded to 0.01 ms).

Each round runs every (file, timer) pair once, in an order rotated every
round; a speedup is the median over rounds of the per-round ratio dense /
compact. Both timers run x86 XNNPACK kernels here: docs/android.md says what
that does and does not tell about an ARM phone, and how to time the same
files on one with TFLite's `benchmark_model`.

Usage:
    PYTHONPATH=. python benchmarks/android_latency.py            # ~10 min
    PYTHONPATH=. python benchmarks/android_latency.py --smoke    # seconds
    PYTHONPATH=. python benchmarks/android_latency.py \\
        --render_from=benchmarks/results/android_latency.json     # the table only
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.android_latency
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

__all__ = ["export_variants", "litert_benchmark", "run", "time_files", "to_markdown"]

FLAGS = flags.FLAGS
MODELS = ("resnet56", "mobilenet_v2")
VARIANTS = ("dense_float32", "compact_float32", "dense_int8", "compact_int8")
TIMERS = ("measure_latency", "litert_benchmark")


def conv_ranks(model, ratio):
    """`r = round(ratio * K)` (at least 1) for every regular Conv2D of `model`.

    K is the layer's max rank, `min(kh * kw * c_in, filters)`; `factorize`
    leaves a layer whose r is not below break-even dense.
    """
    ranks = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            kh, kw, c_in, filters = layer.kernel.shape
            ranks[layer.name] = max(1, int(round(ratio * min(kh * kw * c_in, filters))))
    return ranks


def export_variants(name, ratio, workdir, smoke=False, calibration_count=64):
    """Writes the dense and compact float32 and int8 files of one model.

    Returns:
        `(paths, info)`: dict variant -> .tflite path, and dict variant ->
        MACs, bytes, op counts, verification error (and int8 steps).
    """
    keras.utils.set_random_seed(0)
    model, input_shape = bench_models.whole_model(name, small=smoke)
    ranks = conv_ranks(model, ratio)
    models = {
        "dense": lrpet_tf.fold_batchnorm(model),
        "compact": lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=ranks)),
    }
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((calibration_count, *input_shape)).astype(np.float32)
    paths, info = {}, {}
    for variant in VARIANTS:
        kind, quantization = variant.split("_")
        path = os.path.join(workdir, f"{name}_{variant}.tflite")
        int8 = quantization == "int8"
        result = lrpet_tf.export_tflite(
            models[kind],
            path,
            quantization="int8" if int8 else None,
            representative_dataset=calibration if int8 else None,
            io_type="int8" if int8 else "float32",
        )
        paths[variant] = path
        info[variant] = {
            "macs": int(lrpet_tf.model_report(models[kind]).total_macs),
            "bytes": result.size_bytes,
            "conv2d_ops": result.op_count("CONV_2D"),
            "ops": len(result.ops),
            "batch_size": result.batch_size,
            "max_error": result.max_error,
            "max_error_steps": result.max_error_steps,
        }
    info["factorized_layers"] = sum(
        1 for layer in models["compact"].layers if layer.name.endswith("_reduce")
    )
    return paths, info


def _cli():
    """The `litert-benchmark` command next to this Python, else the module it runs."""
    script = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    if os.path.exists(script):
        return [script]
    found = shutil.which("litert-benchmark")
    if found:
        return [found]
    return [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"]


def litert_benchmark(path, runs, warmup, num_threads=1):
    """Runs `litert-benchmark` on one file; returns its JSON `latency` dict (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        command = _cli() + [
            "--model",
            path,
            "--num_threads",
            str(num_threads),
            "--num_runs",
            str(runs),
            "--warmup_runs",
            str(warmup),
            "--result_json",
            out,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(
                f"litert-benchmark failed on {path} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        with open(out) as f:
            result = json.load(f)
    result["latency"]["fully_accelerated"] = result.get("fully_accelerated")
    result["latency"]["accelerators"] = result.get("accelerators")
    return result["latency"]


def time_files(paths, rounds, runs, warmup, num_threads=1):
    """Times every file with both timers, interleaved, `rounds` times.

    Each round runs every (timer, file) pair once in the rotated order of
    `bench_utils.interleaved`: `lrpet_tf.measure_latency` (a fresh
    interpreter, `warmup` untimed invokes, the median of `runs`) and
    `litert-benchmark` with the same counts.

    Returns:
        `(medians, extra)`: dict timer -> variant -> list of per-round median
        ms, and dict variant -> `litert-benchmark`'s acceleration report.
    """
    extra = {}

    def measure(timer, variant):
        if timer == "measure_latency":
            return lrpet_tf.measure_latency(
                paths[variant], num_threads=num_threads, runs=runs, warmup=warmup
            ).median_ms
        latency = litert_benchmark(paths[variant], runs, warmup, num_threads)
        extra[variant] = {
            "fully_accelerated": latency["fully_accelerated"],
            "accelerators": latency["accelerators"],
        }
        return latency["median_ms"]

    calls = {
        (timer, variant): functools.partial(measure, timer, variant)
        for variant in paths
        for timer in TIMERS
    }
    values = bench_utils.interleaved(calls, rounds)
    medians = {timer: {variant: values[timer, variant] for variant in paths} for timer in TIMERS}
    return medians, extra


def summarize(name, ratio, info, medians, extra, load):
    """Per model: per timer and quantization, dense and compact ms and the speedup."""
    rows = []
    for quantization in ("float32", "int8"):
        dense, compact = f"dense_{quantization}", f"compact_{quantization}"
        row = {
            "model": name,
            "ratio": ratio,
            "quantization": quantization,
            "mac_reduction": info[dense]["macs"] / info[compact]["macs"],
            "bytes_dense": info[dense]["bytes"],
            "bytes_compact": info[compact]["bytes"],
            "max_error_compact": info[compact]["max_error"],
            "litert_benchmark_fully_accelerated": extra.get(compact, {}).get("fully_accelerated"),
            "load_average": load,
        }
        for timer in TIMERS:
            d = np.asarray(medians[timer][dense])
            c = np.asarray(medians[timer][compact])
            row[f"{timer}_dense_ms"] = float(np.median(d))
            row[f"{timer}_compact_ms"] = float(np.median(c))
            row[f"{timer}_speedup"] = bench_utils.paired_ratio(d, c)
        row["timer_agreement"] = (
            row["litert_benchmark_speedup"]["median"] / row["measure_latency_speedup"]["median"]
        )
        rows.append(row)
    return rows


def to_markdown(results):
    """The fragment: machine, the table, how it was measured, the command."""
    text = markdown(results["rows"], results["models"], results["command"], results["settings"])
    return bench_utils.machine_markdown(results["machine"]) + "\n\n" + text


def markdown(rows, info, command, settings):
    """The table, the measurement and the command (without the machine line)."""
    table = bench_utils.markdown_table(
        [
            "model",
            "r/K",
            "file",
            "MAC reduction",
            "dense ms (measure_latency)",
            "compact ms",
            "speedup (measure_latency)",
            "dense ms (litert-benchmark)",
            "compact ms",
            "speedup (litert-benchmark)",
            "litert / measure_latency",
        ],
        [
            [
                r["model"],
                r["ratio"],
                r["quantization"],
                r["mac_reduction"],
                r["measure_latency_dense_ms"],
                r["measure_latency_compact_ms"],
                _ratio_cell(r["measure_latency_speedup"]),
                r["litert_benchmark_dense_ms"],
                r["litert_benchmark_compact_ms"],
                _ratio_cell(r["litert_benchmark_speedup"]),
                r["timer_agreement"],
            ]
            for r in rows
        ],
        digits=2,
    )
    loads = sorted({x for r in rows for x in r["load_average"][:1]})
    return (
        f"{table}\n\n"
        f"Single thread, XNNPACK on x86. {settings['rounds']} interleaved rounds; in each, "
        f"every file is timed by `measure_latency` (median of {settings['runs']} invokes "
        f"after {settings['warmup']} untimed) and by `litert-benchmark` (median of "
        f"{settings['runs']} runs after {settings['warmup']} warm-up runs); the ms columns "
        "are medians over rounds of those medians, a speedup is the median over rounds "
        "of the per-round ratio dense / compact (quartiles in brackets). Files: "
        "`export_tflite` defaults (static batch 1), int8 with int8 input and output "
        f"tensors. Load average (1 min) {loads[0]:.1f}-{loads[-1]:.1f} on 2 cores.\n\n"
        f"Command: `{command}`\n"
    )


def _ratio_cell(ratio):
    return f"{ratio['median']:.2f}x [{ratio['q25']:.2f}-{ratio['q75']:.2f}]"


def run(
    models=MODELS,
    ratio=0.5,
    rounds=7,
    runs=30,
    warmup=5,
    smoke=False,
    output_dir=None,
    command=None,
):
    """Exports, times and writes `android_latency.{json,md}`; returns the results."""
    if smoke:
        models, rounds, runs, warmup = ("tiny",), 2, 3, 1
    settings = {"ratio": ratio, "rounds": rounds, "runs": runs, "warmup": warmup}
    results = {
        "machine": bench_utils.machine_info(),
        "settings": settings,
        "command": command or bench_utils.command_line(drop=("--output_dir",)),
        "models": {},
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        for name in models:
            paths, info = export_variants(name, ratio, workdir, smoke=smoke)
            load = bench_utils.load_average()
            medians, extra = time_files(paths, rounds, runs, warmup)
            rows = summarize(name, ratio, info, medians, extra, load)
            results["models"][name] = {"files": info, "per_round_ms": medians, "litert": extra}
            results["rows"].extend(rows)
    text = to_markdown(results)
    bench_utils.write_results("android_latency", results, text, output_dir, compact=True)
    print(text)
    return results


def define_flags():
    """The script's flags (defined only when run as a script)."""
    flags.DEFINE_list("models", list(MODELS), "Models (bench_models.whole_model names).")
    flags.DEFINE_float("ratio", 0.5, "Rank ratio r/K of every factorized Conv2D.")
    flags.DEFINE_integer("rounds", 7, "Interleaved rounds.")
    flags.DEFINE_integer("runs", 30, "Timed invokes / runs per measurement.")
    flags.DEFINE_integer("warmup", 5, "Untimed invokes / warm-up runs per measurement.")
    flags.DEFINE_bool("smoke", False, "A tiny model, 2 rounds: seconds.")
    flags.DEFINE_string("output_dir", None, "Where results go (default benchmarks/results).")
    flags.DEFINE_string("render_from", None, "Only rewrite the table from this results JSON.")


def main(argv):
    del argv
    if FLAGS.render_from:
        with open(FLAGS.render_from, encoding="utf-8") as f:
            results = json.load(f)
        text = to_markdown(results)
        bench_utils.write_results("android_latency", results, text, FLAGS.output_dir, compact=True)
        return
    run(
        models=tuple(FLAGS.models),
        ratio=FLAGS.ratio,
        rounds=FLAGS.rounds,
        runs=FLAGS.runs,
        warmup=FLAGS.warmup,
        smoke=FLAGS.smoke,
        output_dir=FLAGS.output_dir,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

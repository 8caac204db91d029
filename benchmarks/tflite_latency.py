"""Benchmark 3, TFLite latency against FLOPs: what factorization buys on XNNPACK.

For single conv layers of the shapes CIFAR ResNets, ResNet50 and MobileNetV2
use (at their real spatial sizes) and for whole models, a dense model and its
factorizations at rank ratios 0.75 ... 0.1 (`r = round(ratio * K)` per layer,
optionally rounded up to a multiple of 4 or 8) are built with
`lrpet_tf.factorize(model, ranks={...})`, BatchNormalization folded, written
with `lrpet_tf.export_tflite(..., verify=True)` and timed in the LiteRT
interpreter (`ai_edge_litert`, XNNPACK delegate) with 1 and 2 threads by
`lrpet_tf.export.LatencyTimer`, the timer of `lrpet_tf.measure_latency`. All
candidates of one layer (or model) are timed interleaved, one sample each
per round after warm-up; a speedup is the median over rounds of the
per-round ratio dense time / factorized time. The MAC reduction is dense MACs
/ factorized MACs (`kh*kw*c*n` vs `r*(kh*kw*c + n)` per output position).

Reported: speedup, MAC reduction and their ratio (1.0 = latency falls exactly
as MACs do), the latency break-even rank ratio per layer (where the measured
speedup crosses 1, against the MAC break-even `kh*kw*c*n / (kh*kw*c + n) / K`),
the effect of rounding ranks up to multiples of 4 and 8, and a dense rank
sweep on a few layers that shows XNNPACK's latency steps.

Usage:
    PYTHONPATH=. python benchmarks/tflite_latency.py            # full (~25 min)
    PYTHONPATH=. python benchmarks/tflite_latency.py --smoke    # seconds
"""

import math
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.tflite_latency
    import bench_models
    import bench_utils
    import tflite_latency_report
    from tflite_latency_report import latency_break_even
    from tflite_latency_report import model_break_even
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils
    from benchmarks import tflite_latency_report
    from benchmarks.tflite_latency_report import latency_break_even
    from benchmarks.tflite_latency_report import model_break_even

__all__ = [
    "RANK_RATIOS",
    "latency_break_even",
    "layer_benchmark",
    "model_benchmark",
    "rank_for",
    "rank_sweep",
    "run",
    "time_tflite",
]

RANK_RATIOS = (0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1)
ROUNDINGS = (1, 4, 8)
THREADS = (1, 2)
MODEL_RATIOS = (0.75, 0.5, 0.25, 0.1)
MODEL_ROUNDINGS = (1, 8)
MODELS = ("resnet56", "resnet50", "mobilenet_v2")
SWEEPS = {
    "16x16x32->32 3x3": range(1, 33),
    "28x28x128->128 3x3": range(8, 49),
    "14x14x384->64 1x1": range(8, 49),
}
# Aim each timed sample at this many milliseconds (back-to-back invokes), so
# the timer and Python's call overhead stay small next to the work.
SAMPLE_MS = 2.0


def rank_for(ratio, max_rank, round_to=1):
    """`r = round(ratio * K)` (at least 1), rounded up to a multiple of `round_to`, capped at K."""
    rank = max(1, int(round(ratio * max_rank)))
    return lrpet_tf.ops.round_rank(rank, round_to, max_rank)


def _folded(model):
    return lrpet_tf.fold_batchnorm(model)


def _export(model, path):
    result = lrpet_tf.export_tflite(model, path, verify=True)
    return {"path": path, "ops": result.ops, "max_error": result.max_error}


def time_tflite(paths, threads, rounds, warmup=3):
    """Times .tflite files interleaved with lrpet_tf's timer (LiteRT, XNNPACK).

    One `lrpet_tf.export.LatencyTimer` per file, all timed round by round
    (`bench_utils.interleaved_latency`). Each sample is one untimed invoke,
    then `inner` back-to-back invokes timed together; so every sample starts
    from the warm caches a model running in a loop would have (the other
    files' invokes in between would otherwise evict its weights).

    Which time is the latency on a shared machine: with 1 thread XNNPACK
    runs on the calling thread, so this process's CPU time per invoke is the
    time the invoke actually ran, without the time slices other processes
    took (wall time includes them: on a 2-core machine at load 5 a third of
    the samples are hit); with 2 threads CPU time adds up both threads (and
    their spinning), so wall time it is, and those numbers stay noisier.

    Args:
        paths: Dict name -> .tflite path; all are timed in the same rounds.
        threads: Interpreter threads.
        rounds: Timed rounds (one sample per file per round).
        warmup: Untimed rounds first.

    Returns:
        `(times, wall, inner)`: dict name -> array of seconds per invoke by
        the metric above, the same in wall time, and the invokes per sample
        (chosen so the slowest file's sample takes about `SAMPLE_MS`; all
        files use the same count).
    """
    timers = {
        name: lrpet_tf.export.LatencyTimer(path, num_threads=threads)
        for name, path in paths.items()
    }
    # A first look at each file's time (one invoke, wall clock) sets `inner`.
    probe = bench_utils.round_medians(
        bench_utils.interleaved_latency(timers, 3, warmup_rounds=1, warmup=0)
    )
    slowest_ms = max(float(np.median(t)) for t in probe.values())
    inner = max(1, int(math.ceil(SAMPLE_MS / max(slowest_ms, 1e-4))))
    samples = bench_utils.interleaved_latency(
        timers, rounds, warmup_rounds=warmup, runs=1, warmup=1, repeats=inner
    )
    wall = {n: np.asarray([r.wall_samples_ms[0] for r in rs]) / 1e3 for n, rs in samples.items()}
    cpu = {n: np.asarray([r.cpu_samples_ms[0] for r in rs]) / 1e3 for n, rs in samples.items()}
    return (cpu if threads == 1 else wall), wall, inner


def _speedup(times, wall, dense, candidate):
    """Speedup stats of `candidate` over `dense`: the chosen metric, and wall-time checks."""
    ratio = bench_utils.paired_ratio(times[dense], times[candidate])
    return {
        "speedup": ratio["median"],
        "speedup_q25": ratio["q25"],
        "speedup_q75": ratio["q75"],
        "speedup_wall_min": float(np.min(wall[dense]) / np.min(wall[candidate])),
    }


def invoke_floor(threads=1, rounds=200):
    """Median microseconds of `invoke()` on a model with one 1x1x1 conv: the fixed cost."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = keras.Input((1, 1, 1), name="x")
        model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))
        path = os.path.join(tmp, "floor.tflite")
        lrpet_tf.export_tflite(model, path)
        times, _, _ = time_tflite({"floor": path}, threads, rounds, warmup=10)
    return float(np.median(times["floor"])) * 1e6


def layer_macs(shape, rank=None):
    """MACs of a `ConvShape` dense (`rank=None`) or factorized at `rank`."""
    positions = shape.size * shape.size
    rows, cols = shape.matrix_shape
    if rank is None:
        return rows * cols * positions
    return rank * (rows + cols) * positions


def layer_benchmark(shape, workdir, ratios, roundings, threads, rounds):
    """Dense vs factorized latency of one conv shape at every ratio and rounding.

    Args:
        shape: A `bench_models.ConvShape`.
        workdir: Folder for the .tflite files.
        ratios: Rank ratios `r / K`.
        roundings: Multiples ranks are rounded up to (1 = none).
        threads: Interpreter thread counts.
        rounds: Timed interleaved rounds.

    Returns:
        A dict with the shape, its candidates (rank -> MACs, ops, ...), one
        row per (ratio, rounding, threads), the break-even per thread count
        and the rounding comparisons.
    """
    k = shape.max_rank
    break_even_rank = lrpet_tf.ops.break_even_rank(shape.matrix_shape)
    model = bench_models.conv_layer_model(shape)
    stem = shape.name.replace(" ", "_").replace(">", "").replace("-", "_")
    dense_macs = layer_macs(shape)
    paths = {"dense": os.path.join(workdir, f"{stem}_dense.tflite")}
    exports = {"dense": _export(_folded(model), paths["dense"])}
    points = [
        {"ratio": ratio, "round_to": m, "rank": rank_for(ratio, k, m)}
        for ratio in ratios
        for m in roundings
    ]
    candidates = {}
    for rank in sorted({p["rank"] for p in points}, reverse=True):
        compact, report = lrpet_tf.factorize(model, ranks={"conv": rank}, return_report=True)
        factorized = report.changes[0].action == "factorized"
        name = f"r{rank}"
        paths[name] = os.path.join(workdir, f"{stem}_{name}.tflite")
        exports[name] = _export(_folded(compact), paths[name])
        macs = layer_macs(shape, rank) if factorized else dense_macs
        candidates[name] = {
            "rank": rank,
            "factorized": factorized,
            "macs": macs,
            "report_macs": int(lrpet_tf.model_report(compact).conv_macs),
            "mac_reduction": dense_macs / macs,
            "ops": exports[name]["ops"],
            "max_error": exports[name]["max_error"],
        }
    entry = {
        "shape": shape.name,
        "family": shape.family,
        "role": shape.role,
        "max_rank": k,
        "break_even_rank": break_even_rank,
        "mac_break_even_ratio": break_even_rank / k,
        "dense_macs": dense_macs,
        "dense_ops": exports["dense"]["ops"],
        "candidates": candidates,
        "rows": [],
        "break_even": {},
        "rounding": [],
        "load_average": [bench_utils.load_average()],
    }
    for n_threads in threads:
        times, wall, inner = time_tflite(paths, n_threads, rounds)
        dense_ms = float(np.median(times["dense"])) * 1e3
        for p in points:
            c = candidates[f"r{p['rank']}"]
            speedup = _speedup(times, wall, "dense", f"r{p['rank']}")
            entry["rows"].append(
                dict(
                    p,
                    threads=n_threads,
                    factorized=c["factorized"],
                    mac_reduction=c["mac_reduction"],
                    dense_ms=dense_ms,
                    ms=float(np.median(times[f"r{p['rank']}"])) * 1e3,
                    efficiency=speedup["speedup"] / c["mac_reduction"],
                    inner=inner,
                    **speedup,
                )
            )
        base = [r for r in entry["rows"] if r["threads"] == n_threads and r["round_to"] == 1]
        entry["break_even"][str(n_threads)] = latency_break_even(
            [r["ratio"] for r in base],
            [r["speedup"] for r in base],
            [r["mac_reduction"] for r in base],
        )
        for ratio in ratios:
            plain = rank_for(ratio, k)
            for m in roundings:
                rounded = rank_for(ratio, k, m)
                if m == 1 or rounded == plain:
                    continue
                ratio_stats = bench_utils.paired_ratio(times[f"r{rounded}"], times[f"r{plain}"])
                entry["rounding"].append(
                    {
                        "threads": n_threads,
                        "ratio": ratio,
                        "round_to": m,
                        "rank": plain,
                        "rounded_rank": rounded,
                        "mac_ratio": candidates[f"r{rounded}"]["macs"]
                        / candidates[f"r{plain}"]["macs"],
                        "time_ratio": ratio_stats["median"],
                    }
                )
    entry["load_average"].append(bench_utils.load_average())
    return entry


def rank_sweep(shape, ranks, workdir, threads=1, rounds=20):
    """Latency of one conv shape factorized at every rank in `ranks`, relative to dense.

    Returns:
        A dict: the shape, ranks, MAC reduction and median time relative to
        the dense layer per rank (all timed interleaved in one run).
    """
    model = bench_models.conv_layer_model(shape)
    stem = "sweep_" + shape.name.replace(" ", "_").replace(">", "").replace("-", "_")
    paths = {"dense": os.path.join(workdir, f"{stem}_dense.tflite")}
    _export(_folded(model), paths["dense"])
    ranks = [r for r in ranks if r < lrpet_tf.ops.break_even_rank(shape.matrix_shape)]
    for rank in ranks:
        compact = lrpet_tf.factorize(model, ranks={"conv": rank})
        paths[f"r{rank}"] = os.path.join(workdir, f"{stem}_r{rank}.tflite")
        _export(_folded(compact), paths[f"r{rank}"])
    load = bench_utils.load_average()
    times, _, inner = time_tflite(paths, threads, rounds)
    dense_macs = layer_macs(shape)
    return {
        "shape": shape.name,
        "threads": threads,
        "ranks": list(ranks),
        "dense_ms": float(np.median(times["dense"])) * 1e3,
        "relative_time": [
            bench_utils.paired_ratio(times[f"r{r}"], times["dense"])["median"] for r in ranks
        ],
        "relative_macs": [layer_macs(shape, r) / dense_macs for r in ranks],
        "inner": inner,
        "load_average": [load, bench_utils.load_average()],
    }


def _conv_ranks(model, ratio, round_to):
    ranks = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D or layer.groups != 1:
            continue
        shape = tuple(int(d) for d in layer.kernel.shape)
        k = min(int(np.prod(shape[:-1])), shape[-1])
        rank = rank_for(ratio, k, round_to)
        if rank < lrpet_tf.ops.break_even_rank((int(np.prod(shape[:-1])), shape[-1])):
            ranks[layer.name] = rank
    return ranks


def model_benchmark(name, workdir, ratios, roundings, threads, rounds, smoke=False):
    """Dense vs factorized latency of a whole model (every Conv2D at the same rank ratio).

    Layers whose rank would not be below break-even stay dense; the
    classifier Dense and depthwise convs are never factorized.

    Returns:
        A dict with MACs, op counts and one row per (ratio, rounding, threads).
    """
    keras.utils.set_random_seed(0)
    model, _ = bench_models.whole_model(name, small=smoke)
    paths = {"dense": os.path.join(workdir, f"model_{name}_dense.tflite")}
    dense = _folded(model)
    export = _export(dense, paths["dense"])
    dense_macs = int(lrpet_tf.model_report(dense).total_macs)
    entry = {
        "model": name,
        "dense_macs": dense_macs,
        "dense_conv2d_ops": export["ops"].count("CONV_2D"),
        "candidates": {},
        "rows": [],
        "break_even": {},
        "rounding": [],
        "load_average": [bench_utils.load_average()],
    }
    points = []
    for ratio in ratios:
        for m in roundings:
            key = f"g{ratio}_round{m}"
            ranks = _conv_ranks(model, ratio, m)
            compact = _folded(lrpet_tf.factorize(model, ranks=ranks))
            paths[key] = os.path.join(workdir, f"model_{name}_{key}.tflite")
            export = _export(compact, paths[key])
            macs = int(lrpet_tf.model_report(compact).total_macs)
            entry["candidates"][key] = {
                "ratio": ratio,
                "round_to": m,
                "factorized_layers": len(ranks),
                "macs": macs,
                "mac_reduction": dense_macs / macs,
                "conv2d_ops": export["ops"].count("CONV_2D"),
                "max_error": export["max_error"],
            }
            points.append(key)
    for n_threads in threads:
        times, wall, inner = time_tflite(paths, n_threads, rounds)
        for key in points:
            c = entry["candidates"][key]
            speedup = _speedup(times, wall, "dense", key)
            entry["rows"].append(
                {
                    "ratio": c["ratio"],
                    "round_to": c["round_to"],
                    "threads": n_threads,
                    "mac_reduction": c["mac_reduction"],
                    "dense_ms": float(np.median(times["dense"])) * 1e3,
                    "ms": float(np.median(times[key])) * 1e3,
                    "efficiency": speedup["speedup"] / c["mac_reduction"],
                    "inner": inner,
                    **speedup,
                }
            )
        entry["break_even"] = model_break_even(entry)
        for ratio in ratios:
            for m in roundings:
                if m == 1:
                    continue
                rounded, plain = f"g{ratio}_round{m}", f"g{ratio}_round1"
                entry["rounding"].append(
                    {
                        "threads": n_threads,
                        "ratio": ratio,
                        "round_to": m,
                        "mac_ratio": entry["candidates"][rounded]["macs"]
                        / entry["candidates"][plain]["macs"],
                        "time_ratio": bench_utils.paired_ratio(times[rounded], times[plain])[
                            "median"
                        ],
                    }
                )
    entry["load_average"].append(bench_utils.load_average())
    return entry


def summarize_rounding(entries):
    """Median time and MAC ratio of rounded-up over unrounded ranks, per multiple and threads."""
    summary = {}
    for entry in entries:
        for r in entry["rounding"]:
            key = f"round_to={r['round_to']}, threads={r['threads']}"
            summary.setdefault(key, {"time": [], "macs": []})
            summary[key]["time"].append(r["time_ratio"])
            summary[key]["macs"].append(r["mac_ratio"])
    return {
        key: {
            "cases": len(v["time"]),
            "median_time_ratio": float(np.median(v["time"])),
            "median_mac_ratio": float(np.median(v["macs"])),
            "faster_share": float(np.mean(np.asarray(v["time"]) < 1.0)),
            "slower_share": float(np.mean(np.asarray(v["time"]) > 1.0)),
        }
        for key, v in summary.items()
    }


def run(
    layer_shapes=None,
    ratios=RANK_RATIOS,
    roundings=ROUNDINGS,
    threads=THREADS,
    layer_rounds=40,
    models=MODELS,
    model_ratios=MODEL_RATIOS,
    model_roundings=MODEL_ROUNDINGS,
    model_rounds=20,
    sweeps=None,
    sweep_rounds=20,
    smoke=False,
    output_dir=None,
    plot_dir=None,
):
    """Runs benchmark 3 and writes `tflite_latency.json` / `.md` and its plots.

    Args:
        layer_shapes: `ConvShape`s (default `bench_models.LAYER_SHAPES`).
        ratios, roundings, threads, layer_rounds: The single-layer grid.
        models, model_ratios, model_roundings, model_rounds: The whole models.
        sweeps: Dict shape name -> ranks of the dense rank sweep.
        sweep_rounds: Its timed rounds.
        smoke: A tiny version that runs in seconds (for CI).
        output_dir: Where the JSON and markdown go (default benchmarks/results).
        plot_dir: Where the PNGs go (default benchmarks/plots).

    Returns:
        The results dict (also written as JSON).
    """
    layer_shapes = bench_models.LAYER_SHAPES if layer_shapes is None else layer_shapes
    sweeps = SWEEPS if sweeps is None else sweeps
    if smoke:
        layer_shapes = [s for s in bench_models.LAYER_SHAPES if s.name == "8x8x64->64 3x3"]
        ratios, roundings, threads, layer_rounds = (0.5, 0.1), (1, 8), (1,), 3
        models, model_ratios, model_roundings, model_rounds = ("tiny",), (0.5,), (1,), 3
        sweeps, sweep_rounds = {"16x16x32->32 3x3": (4, 5)}, 3
    by_name = {s.name: s for s in bench_models.LAYER_SHAPES}
    results = {
        "benchmark": "tflite_latency",
        "smoke": smoke,
        "machine": bench_utils.machine_info(),
        "settings": {
            "ratios": list(ratios),
            "roundings": list(roundings),
            "threads": list(threads),
            "layer_rounds": layer_rounds,
            "model_rounds": model_rounds,
            "sample_ms": SAMPLE_MS,
            "time_metric": "1 thread: process CPU time per invoke; more threads: wall time",
        },
        "invoke_floor_us": {str(t): invoke_floor(t, rounds=20 if smoke else 200) for t in threads},
        "layers": [],
        "models": [],
        "sweeps": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        for shape in layer_shapes:
            entry = layer_benchmark(shape, workdir, ratios, roundings, threads, layer_rounds)
            results["layers"].append(entry)
            print(_layer_line(entry), flush=True)
            keras.backend.clear_session()
        for name, ranks in sweeps.items():
            results["sweeps"].append(
                rank_sweep(by_name[name], ranks, workdir, threads=1, rounds=sweep_rounds)
            )
            print(f"sweep {name}: done", flush=True)
            keras.backend.clear_session()
        for name in models:
            entry = model_benchmark(
                name, workdir, model_ratios, model_roundings, threads, model_rounds, smoke=smoke
            )
            results["models"].append(entry)
            print(_model_line(entry), flush=True)
            keras.backend.clear_session()
    results["rounding_summary"] = summarize_rounding(results["layers"])
    results["model_rounding_summary"] = summarize_rounding(results["models"])
    results["machine"]["load_average_end"] = bench_utils.load_average()
    return tflite_latency_report.render(results, output_dir, plot_dir)


def _layer_line(entry):
    rows = [r for r in entry["rows"] if r["round_to"] == 1 and r["threads"] == 1]
    cells = ", ".join(f"{r['ratio']}: {r['speedup']:.2f}x/{r['mac_reduction']:.2f}x" for r in rows)
    return f"{entry['shape']} (1 thread, speedup/MAC reduction) {cells}"


def _model_line(entry):
    rows = [r for r in entry["rows"] if r["round_to"] == 1 and r["threads"] == 1]
    cells = ", ".join(f"{r['ratio']}: {r['speedup']:.2f}x/{r['mac_reduction']:.2f}x" for r in rows)
    return f"model {entry['model']} (1 thread) {cells}"


FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags; called only when it runs as a script.

    So the benchmark modules can be imported together (tests) without absl's
    duplicate-flag errors.
    """
    flags.DEFINE_bool("smoke", False, "Tiny version that runs in seconds.")
    flags.DEFINE_list("models", list(MODELS), "Whole models to time.")
    flags.DEFINE_list("ratios", [str(r) for r in RANK_RATIOS], "Rank ratios r/K of the layers.")
    flags.DEFINE_list("threads", [str(t) for t in THREADS], "Interpreter thread counts.")
    flags.DEFINE_integer("layer_rounds", 40, "Interleaved rounds per layer.")
    flags.DEFINE_integer("model_rounds", 20, "Interleaved rounds per whole model.")
    flags.DEFINE_integer("sweep_rounds", 20, "Interleaved rounds per rank sweep.")
    flags.DEFINE_string("output_dir", None, "Results folder (default benchmarks/results).")
    flags.DEFINE_string("plot_dir", None, "Plot folder (default benchmarks/plots).")
    flags.DEFINE_string(
        "render_from", None, "Only re-render tables and plots from this results JSON."
    )


def main(argv):
    del argv
    if FLAGS.render_from:
        results = tflite_latency_report.load(FLAGS.render_from)
        tflite_latency_report.render(results, FLAGS.output_dir, FLAGS.plot_dir)
        return
    run(
        ratios=tuple(float(r) for r in FLAGS.ratios),
        threads=tuple(int(t) for t in FLAGS.threads),
        layer_rounds=FLAGS.layer_rounds,
        models=tuple(FLAGS.models),
        model_rounds=FLAGS.model_rounds,
        sweep_rounds=FLAGS.sweep_rounds,
        smoke=FLAGS.smoke,
        output_dir=FLAGS.output_dir,
        plot_dir=FLAGS.plot_dir,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark 3, TFLite latency against FLOPs: what factorization buys on XNNPACK.

For single conv layers of the shapes CIFAR ResNets, ResNet50 and MobileNetV2
use (at their real spatial sizes) and for whole models, a dense model and its
factorizations at rank ratios 0.75 ... 0.1 (`r = round(ratio * K)` per layer,
optionally rounded up to a multiple of 4 or 8) are built with
`lrpet_tf.factorize(model, ranks={...})`, BatchNormalization folded, written
with `lrpet_tf.export_tflite(..., verify=True)` and timed in the LiteRT
interpreter (`ai_edge_litert`, XNNPACK delegate) with 1 and 2 threads. All
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
    PYTHONPATH=. python benchmarks/tflite_latency.py            # full (~20 min)
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
from lrpet_tf._keras import keras  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.tflite_latency
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

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


def _interpreter(path, threads):
    interpreter = lrpet_tf.TFLiteModel(path, num_threads=threads).new_interpreter()
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(
            detail["index"], rng.standard_normal(detail["shape"]).astype(np.float32)
        )
    interpreter.invoke()  # XNNPACK packs the weights on the first invoke
    return interpreter


def time_tflite(paths, threads, rounds, warmup=3):
    """Times .tflite files interleaved in the LiteRT interpreter (XNNPACK).

    Args:
        paths: Dict name -> .tflite path; all are timed in the same rounds.
        threads: Interpreter threads.
        rounds: Timed rounds (one sample per file per round).
        warmup: Untimed rounds first.

    Returns:
        `(times, inner)`: dict name -> array of seconds per invoke, and the
        invokes per sample (chosen so the slowest file's sample takes about
        `SAMPLE_MS`; all files use the same count).
    """
    interpreters = {name: _interpreter(path, threads) for name, path in paths.items()}
    probe = bench_utils.interleaved_times(
        {name: i.invoke for name, i in interpreters.items()}, 3, warmup=1
    )
    slowest = max(float(np.median(t)) for t in probe.values())
    inner = max(1, int(math.ceil(SAMPLE_MS / 1e3 / max(slowest, 1e-7))))
    times = bench_utils.interleaved_times(
        {name: i.invoke for name, i in interpreters.items()}, rounds, warmup=warmup, inner=inner
    )
    return times, inner


def invoke_floor(threads=1, rounds=200):
    """Median microseconds of `invoke()` on a model with one 1x1x1 conv: the fixed cost."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = keras.Input((1, 1, 1), name="x")
        model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs))
        path = os.path.join(tmp, "floor.tflite")
        lrpet_tf.export_tflite(model, path)
        interpreter = _interpreter(path, threads)
        times = bench_utils.interleaved_times({"floor": interpreter.invoke}, rounds, 10, 10)
    return float(np.median(times["floor"])) * 1e6


def layer_macs(shape, rank=None):
    """MACs of a `ConvShape` dense (`rank=None`) or factorized at `rank`."""
    positions = shape.size * shape.size
    rows, cols = shape.matrix_shape
    if rank is None:
        return rows * cols * positions
    return rank * (rows + cols) * positions


def latency_break_even(ratios, speedups, mac_reductions):
    """Where the measured speedup crosses 1, going down from the highest rank ratio.

    The break-even is placed between the lowest ratio with speedup < 1 and
    the next lower ratio, above which every speedup is >= 1 (so one noisy
    point does not move it), linearly in the rank ratio and geometrically in
    the MAC reduction.

    Args:
        ratios, speedups, mac_reductions: Parallel sequences, any order.

    Returns:
        A dict: `status` `"pays_everywhere"` (speedup >= 1 at every ratio),
        `"never_pays"` or `"crosses"`, and for `"crosses"` the interpolated
        `rank_ratio` and `mac_reduction` at speedup 1.
    """
    points = sorted(zip(ratios, speedups, mac_reductions), reverse=True)
    last_below = max((i for i, p in enumerate(points) if p[1] < 1.0), default=None)
    if last_below is None:
        return {"status": "pays_everywhere", "rank_ratio": None, "mac_reduction": None}
    if last_below == len(points) - 1:
        return {"status": "never_pays", "rank_ratio": None, "mac_reduction": None}
    (r0, s0, m0), (r1, s1, m1) = points[last_below], points[last_below + 1]
    t = (1.0 - s0) / (s1 - s0) if s1 != s0 else 0.5
    return {
        "status": "crosses",
        "rank_ratio": float(r0 + t * (r1 - r0)),
        "mac_reduction": float(math.exp(math.log(m0) + t * (math.log(m1) - math.log(m0)))),
    }


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
        times, inner = time_tflite(paths, n_threads, rounds)
        dense_ms = float(np.median(times["dense"])) * 1e3
        for p in points:
            c = candidates[f"r{p['rank']}"]
            speedup = bench_utils.paired_ratio(times["dense"], times[f"r{p['rank']}"])
            entry["rows"].append(
                dict(
                    p,
                    threads=n_threads,
                    factorized=c["factorized"],
                    mac_reduction=c["mac_reduction"],
                    dense_ms=dense_ms,
                    ms=float(np.median(times[f"r{p['rank']}"])) * 1e3,
                    speedup=speedup["median"],
                    speedup_q25=speedup["q25"],
                    speedup_q75=speedup["q75"],
                    efficiency=speedup["median"] / c["mac_reduction"],
                    inner=inner,
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
    times, inner = time_tflite(paths, threads, rounds)
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
        times, inner = time_tflite(paths, n_threads, rounds)
        for key in points:
            c = entry["candidates"][key]
            speedup = bench_utils.paired_ratio(times["dense"], times[key])
            entry["rows"].append(
                {
                    "ratio": c["ratio"],
                    "round_to": c["round_to"],
                    "threads": n_threads,
                    "mac_reduction": c["mac_reduction"],
                    "dense_ms": float(np.median(times["dense"])) * 1e3,
                    "ms": float(np.median(times[key])) * 1e3,
                    "speedup": speedup["median"],
                    "speedup_q25": speedup["q25"],
                    "speedup_q75": speedup["q75"],
                    "efficiency": speedup["median"] / c["mac_reduction"],
                    "inner": inner,
                }
            )
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
    layer_rounds=30,
    models=MODELS,
    model_ratios=MODEL_RATIOS,
    model_roundings=MODEL_ROUNDINGS,
    model_rounds=12,
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
    plot_dir = plot_dir or os.path.join(bench_utils.BENCHMARKS_DIR, "plots")
    results["plots"] = [
        plot_speedup_vs_macs(results, os.path.join(plot_dir, "tflite_speedup_vs_macs.png")),
        plot_efficiency(results, os.path.join(plot_dir, "tflite_efficiency_vs_rank_ratio.png")),
        plot_sweeps(results, os.path.join(plot_dir, "tflite_rank_sweep.png")),
    ]
    bench_utils.write_results("tflite_latency", results, to_markdown(results), output_dir)
    return results


def _layer_line(entry):
    rows = [r for r in entry["rows"] if r["round_to"] == 1 and r["threads"] == 1]
    cells = ", ".join(f"{r['ratio']}: {r['speedup']:.2f}x/{r['mac_reduction']:.2f}x" for r in rows)
    return f"{entry['shape']} (1 thread, speedup/MAC reduction) {cells}"


def _model_line(entry):
    rows = [r for r in entry["rows"] if r["round_to"] == 1 and r["threads"] == 1]
    cells = ", ".join(f"{r['ratio']}: {r['speedup']:.2f}x/{r['mac_reduction']:.2f}x" for r in rows)
    return f"model {entry['model']} (1 thread) {cells}"


def _row(entry, ratio, threads, round_to=1):
    for r in entry["rows"]:
        if r["ratio"] == ratio and r["threads"] == threads and r["round_to"] == round_to:
            return r
    return None


def _break_even_cell(b):
    if b["status"] == "crosses":
        return f"{b['rank_ratio']:.2f} ({b['mac_reduction']:.2f}x MACs)"
    return {"pays_everywhere": "pays at all ratios", "never_pays": "never pays"}[b["status"]]


def to_markdown(results):
    """The markdown tables of benchmark 3."""
    settings = results["settings"]
    floor = ", ".join(f"{t} thread(s) {v:.1f} us" for t, v in results["invoke_floor_us"].items())
    parts = [
        bench_utils.machine_markdown(results["machine"]),
        f"Each speedup is the median over {settings['layer_rounds']} (layers) / "
        f"{settings['model_rounds']} (models) interleaved rounds of dense time / factorized "
        f"time; efficiency = speedup / MAC reduction (1.0: latency falls exactly as MACs). "
        f"Fixed cost of one `invoke()` from Python (a 1x1x1 conv): {floor}.",
    ]
    threads = settings["threads"]
    summary_ratios = [r for r in (0.75, 0.5, 0.25, 0.1) if r in settings["ratios"]]
    headers = ["layer", "K", "MAC break-even r/K", "dense ms (1 thr)"]
    for ratio in summary_ratios:
        headers.append(f"r/K={ratio}: MACs / 1 thr / 2 thr")
    headers += [f"latency break-even r/K ({t} thr)" for t in threads]
    rows = []
    for e in results["layers"]:
        row = [e["shape"], e["max_rank"], e["mac_break_even_ratio"]]
        first = _row(e, settings["ratios"][0], threads[0])
        row.append(first["dense_ms"] if first else None)
        for ratio in summary_ratios:
            cells = []
            for t in (1, 2):
                r = _row(e, ratio, t)
                cells.append(f"{r['speedup']:.2f}x" if r else "-")
            macs = _row(e, ratio, threads[0])["mac_reduction"]
            row.append(f"{macs:.2f}x / " + " / ".join(cells))
        row += [_break_even_cell(e["break_even"][str(t)]) for t in threads]
        rows.append(row)
    parts.append(
        "Single conv layers (stride 1, same padding, bias; rank `r = round(ratio * K)`): MAC "
        "reduction / measured speedup with 1 and 2 threads:\n\n"
        + bench_utils.markdown_table(headers, rows, digits=2)
    )
    eff_rows = []
    for family in ("cifar_resnet", "resnet50", "mobilenet_v2"):
        for t in threads:
            cells = [family, t]
            for ratio in settings["ratios"]:
                values = [
                    _row(e, ratio, t)["efficiency"]
                    for e in results["layers"]
                    if e["family"] == family and _row(e, ratio, t)
                ]
                cells.append(float(np.median(values)) if values else None)
            if len(cells) > 2 and any(c is not None for c in cells[2:]):
                eff_rows.append(cells)
    parts.append(
        "Efficiency (speedup / MAC reduction), median over the layers of each family:\n\n"
        + bench_utils.markdown_table(
            ["family", "threads"] + [f"r/K={r}" for r in settings["ratios"]], eff_rows
        )
    )
    if results["models"]:
        rows = []
        for e in results["models"]:
            for c in e["candidates"].values():
                row = [e["model"], c["ratio"], c["round_to"], c["factorized_layers"]]
                row.append(f"{e['dense_macs'] / 1e6:.1f}M -> {c['macs'] / 1e6:.1f}M")
                row.append(c["mac_reduction"])
                for t in threads:
                    r = _row(e, c["ratio"], t, c["round_to"])
                    row += [r["dense_ms"], r["speedup"], r["efficiency"]]
                rows.append(row)
        headers = ["model", "r/K", "round to", "factorized convs", "MACs", "MAC reduction"]
        for t in threads:
            headers += [f"dense ms ({t} thr)", f"speedup ({t} thr)", f"efficiency ({t} thr)"]
        loads = "; ".join(
            f"{e['model']} {e['load_average'][0][0]:.2f} -> {e['load_average'][1][0]:.2f}"
            for e in results["models"]
        )
        parts.append(
            f"Whole models (every Conv2D at the same r/K where below break-even; BN folded; "
            f"load {loads}):\n\n" + bench_utils.markdown_table(headers, rows, digits=2)
        )
    rounding_rows = []
    for source, summary in (
        ("layers", results["rounding_summary"]),
        ("models", results["model_rounding_summary"]),
    ):
        for key, s in summary.items():
            rounding_rows.append(
                [
                    source,
                    key,
                    s["cases"],
                    s["median_mac_ratio"],
                    s["median_time_ratio"],
                    f"{100 * s['faster_share']:.0f}% / {100 * s['slower_share']:.0f}%",
                ]
            )
    if rounding_rows:
        parts.append(
            "Rounding ranks up to a multiple (only cases where it changes the rank): MACs and "
            "time of the rounded-up rank over the unrounded one (time < 1: faster despite "
            "more MACs):\n\n"
            + bench_utils.markdown_table(
                [
                    "where",
                    "rounding",
                    "cases",
                    "MAC ratio (median)",
                    "time ratio (median)",
                    "faster / slower",
                ],
                rounding_rows,
                digits=3,
            )
        )
    loads = "; ".join(
        f"{e['shape']} {e['load_average'][0][0]:.2f}->{e['load_average'][1][0]:.2f}"
        for e in results["layers"]
    )
    parts.append(f"Load average (1 min) per layer, start -> end: {loads}.")
    full = []
    for e in results["layers"]:
        for r in e["rows"]:
            full.append(
                [
                    e["shape"],
                    r["ratio"],
                    r["round_to"],
                    r["rank"],
                    r["threads"],
                    r["mac_reduction"],
                    r["dense_ms"],
                    r["ms"],
                    r["speedup"],
                    r["efficiency"],
                ]
            )
    parts.append(
        "<details><summary>All single-layer measurements</summary>\n\n"
        + bench_utils.markdown_table(
            [
                "layer",
                "r/K",
                "round to",
                "rank",
                "threads",
                "MAC reduction",
                "dense ms",
                "factorized ms",
                "speedup",
                "efficiency",
            ],
            full,
            digits=3,
        )
        + "\n\n</details>"
    )
    return "\n\n".join(parts)


_FAMILY_COLORS = {
    "cifar_resnet": "tab:blue",
    "resnet50": "tab:orange",
    "mobilenet_v2": "tab:green",
}
_FAMILY_LABELS = {
    "cifar_resnet": "CIFAR ResNet convs",
    "resnet50": "ResNet50 convs",
    "mobilenet_v2": "MobileNetV2 1x1 convs",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_speedup_vs_macs(results, path):
    """Measured speedup against MAC reduction, one panel per thread count (log-log)."""
    plt = _pyplot()
    threads = results["settings"]["threads"]
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 5.5), squeeze=False)
    limit = 1.0
    for e in results["layers"] + results["models"]:
        for r in e["rows"]:
            limit = max(limit, r["mac_reduction"], r["speedup"])
    for ax, t in zip(axes[0], threads):
        for family, color in _FAMILY_COLORS.items():
            rows = [
                r
                for e in results["layers"]
                if e["family"] == family
                for r in e["rows"]
                if r["threads"] == t and r["round_to"] == 1
            ]
            if rows:
                ax.scatter(
                    [r["mac_reduction"] for r in rows],
                    [r["speedup"] for r in rows],
                    s=14,
                    alpha=0.6,
                    color=color,
                    label=_FAMILY_LABELS[family],
                )
        markers = ("*", "D", "P", "X")
        for marker, e in zip(markers, results["models"]):
            rows = [r for r in e["rows"] if r["threads"] == t and r["round_to"] == 1]
            ax.plot(
                [r["mac_reduction"] for r in rows],
                [r["speedup"] for r in rows],
                marker=marker,
                markersize=9,
                color="black",
                linestyle="--",
                linewidth=0.8,
                label=f"whole {e['model']}",
            )
        line = np.array([1.0, limit * 1.2])
        ax.plot(line, line, color="gray", linewidth=1, label="speedup = MAC reduction")
        ax.axhline(1.0, color="red", linewidth=1, linestyle=":", label="break-even (speedup 1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.9, limit * 1.2)
        ax.set_ylim(min(0.3, ax.get_ylim()[0]), limit * 1.2)
        ax.set_xlabel("MAC reduction (dense MACs / factorized MACs)")
        ax.set_ylabel("measured latency speedup (dense / factorized)")
        ax.set_title(f"XNNPACK (ai_edge_litert), {t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Factorized conv: measured TFLite speedup vs MAC reduction (rank r/K 0.75-0.1)")
    return bench_utils.save_figure(fig, path)


def plot_efficiency(results, path):
    """Speedup / MAC reduction against rank ratio, one line per layer, per thread count."""
    plt = _pyplot()
    threads = results["settings"]["threads"]
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 5), squeeze=False)
    for ax, t in zip(axes[0], threads):
        seen = set()
        for e in results["layers"]:
            rows = sorted(
                (r for r in e["rows"] if r["threads"] == t and r["round_to"] == 1),
                key=lambda r: r["ratio"],
            )
            label = None if e["family"] in seen else _FAMILY_LABELS[e["family"]]
            seen.add(e["family"])
            ax.plot(
                [r["ratio"] for r in rows],
                [r["efficiency"] for r in rows],
                marker="o",
                markersize=3,
                linewidth=1,
                alpha=0.7,
                color=_FAMILY_COLORS[e["family"]],
                label=label,
            )
        ax.axhline(1.0, color="gray", linewidth=1, label="latency falls as MACs do")
        ax.set_xlabel("rank ratio r / K")
        ax.set_ylabel("speedup / MAC reduction")
        ax.set_title(f"Efficiency of factorization, {t} thread{'s' if t > 1 else ''}")
        ax.invert_xaxis()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return bench_utils.save_figure(fig, path)


def plot_sweeps(results, path):
    """Factorized time relative to dense against rank, with the MAC-proportional line."""
    plt = _pyplot()
    sweeps = results["sweeps"]
    fig, axes = plt.subplots(1, max(1, len(sweeps)), figsize=(5.5 * max(1, len(sweeps)), 4.5))
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, sweeps):
        ax.plot(s["ranks"], s["relative_time"], marker="o", markersize=3, label="measured time")
        ax.plot(s["ranks"], s["relative_macs"], color="gray", linestyle="--", label="MACs")
        for x in range(8, max(s["ranks"]) + 1, 8):
            ax.axvline(x, color="red" if x % 16 == 0 else "pink", linewidth=0.8, alpha=0.6)
        ax.set_xlabel("rank r (vertical lines: multiples of 8, red: of 16)")
        ax.set_ylabel("factorized / dense (time or MACs)")
        ax.set_title(f"{s['shape']}, {s['threads']} thread (dense {s['dense_ms']:.2f} ms)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Rank sweep on XNNPACK: latency steps vs MACs")
    return bench_utils.save_figure(fig, path)


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
    flags.DEFINE_integer("layer_rounds", 30, "Interleaved rounds per layer.")
    flags.DEFINE_integer("model_rounds", 12, "Interleaved rounds per whole model.")
    flags.DEFINE_integer("sweep_rounds", 20, "Interleaved rounds per rank sweep.")
    flags.DEFINE_string("output_dir", None, "Results folder (default benchmarks/results).")
    flags.DEFINE_string("plot_dir", None, "Plot folder (default benchmarks/plots).")


def main(argv):
    del argv
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

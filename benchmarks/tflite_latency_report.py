"""Tables and plots of benchmark 3 (`tflite_latency.py`), from its results dict.

Separate from the measurement so the markdown and PNGs can be re-rendered
from the results JSON without timing anything again (`tflite_latency.py
--render_from=benchmarks/results/tflite_latency.json`).

The JSON is the results dict in a packed form (`pack`, `unpack`): a layer's
rows repeat one measurement per rank and thread count for every rank ratio
and rounding that gives that rank, and their MAC reductions and
efficiencies follow from the candidates. So the file keeps one timing per
candidate and thread count, and `unpack` rebuilds the rows.
"""

import json
import math
import os

import numpy as np

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.tflite_latency_report
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

__all__ = [
    "latency_break_even",
    "load",
    "model_break_even",
    "pack",
    "plot_efficiency",
    "plot_speedup_vs_macs",
    "plot_sweeps",
    "render",
    "to_markdown",
    "unpack",
]

# Of a candidate's timing at one thread count, in the packed file. The
# speedup, which every table and plot derives from, keeps 6 significant
# digits (so the tables render from the file exactly as from the
# measurement); the others 4.
TIMING_COLUMNS = ("speedup", "ms", "speedup_q25", "speedup_q75", "speedup_wall_min")
# Of a single layer's candidate (a factorization rank), in the packed file
# (its `report_macs`, `model_report`'s count, which the tests check equals
# `macs`, is left out).
CANDIDATE_COLUMNS = ("rank", "factorized", "macs", "ops", "max_error")


def _four_digits(value):
    return float(f"{value:.4g}")


def _timing(entry, names):
    """Thread count -> `inner`, `dense_ms` and, per candidate, its `TIMING_COLUMNS`."""
    timing = {}
    for row, name in zip(entry["rows"], names):
        t = timing.setdefault(str(row["threads"]), {"inner": row["inner"]})
        t["dense_ms"] = row["dense_ms"]
        t[name] = [row["speedup"]] + [_four_digits(row[c]) for c in TIMING_COLUMNS[1:]]
    return timing


def pack(results):
    """The results dict as written to `tflite_latency.json` (see the module docstring).

    A layer keeps `ranks` (rank ratio -> the rank at each of
    `settings["roundings"]`), `candidates` (name -> `CANDIDATE_COLUMNS`),
    `timing` (threads -> `inner`, `dense_ms`, candidate name ->
    `TIMING_COLUMNS`) and `rounding` (threads -> `"r<rank>>r<rounded rank>"`
    -> time ratio of the rounded-up rank over the rank); a whole model its
    candidate dicts, `timing`, and `rounding` (threads -> rounded candidate
    -> its time ratio over the unrounded one at the same ratio).
    """
    packed = {k: v for k, v in results.items() if k not in ("layers", "models")}
    packed["columns"] = {"timing": list(TIMING_COLUMNS), "candidates": list(CANDIDATE_COLUMNS)}
    packed["layers"] = []
    for e in results["layers"]:
        layer = {k: v for k, v in e.items() if k not in ("candidates", "rows", "rounding")}
        ranks = {}
        for r in e["rows"]:
            if r["threads"] == e["rows"][0]["threads"]:
                ranks.setdefault(str(r["ratio"]), []).append(r["rank"])
        layer["ranks"] = ranks
        layer["candidates"] = {
            name: [c[k] for k in CANDIDATE_COLUMNS[:-1]] + [_four_digits(c["max_error"])]
            for name, c in e["candidates"].items()
        }
        layer["timing"] = _timing(e, [f"r{r['rank']}" for r in e["rows"]])
        layer["rounding"] = {}
        for r in e["rounding"]:
            pair = f"r{r['rank']}>r{r['rounded_rank']}"
            layer["rounding"].setdefault(str(r["threads"]), {})[pair] = r["time_ratio"]
        packed["layers"].append(layer)
    packed["models"] = []
    for e in results["models"]:
        model = {k: v for k, v in e.items() if k not in ("candidates", "rows", "rounding")}
        model["candidates"] = {
            name: {k: v for k, v in c.items() if k != "mac_reduction"}
            for name, c in e["candidates"].items()
        }
        names = [f"g{r['ratio']}_round{r['round_to']}" for r in e["rows"]]
        model["timing"] = _timing(e, names)
        model["rounding"] = {}
        for r in e["rounding"]:
            name = f"g{r['ratio']}_round{r['round_to']}"
            model["rounding"].setdefault(str(r["threads"]), {})[name] = r["time_ratio"]
        packed["models"].append(model)
    return packed


def _unpacked_row(point, candidate, timing, name):
    """One row of the results dict: a point (ratio, rounding, threads, ...) and its timing."""
    stats = dict(zip(TIMING_COLUMNS, timing[name]))
    return {
        **point,
        "mac_reduction": candidate["mac_reduction"],
        "dense_ms": timing["dense_ms"],
        "ms": stats.pop("ms"),
        "efficiency": stats["speedup"] / candidate["mac_reduction"],
        "inner": timing["inner"],
        **stats,
    }


def unpack(data):
    """The results dict `pack` wrote (a results dict that is not packed comes back as is)."""
    if "columns" not in data:
        return data
    results = {k: v for k, v in data.items() if k not in ("layers", "models", "columns")}
    roundings = data["settings"]["roundings"]
    results["layers"] = []
    for packed in data["layers"]:
        e = {k: v for k, v in packed.items() if k not in ("ranks", "candidates", "timing")}
        e["candidates"] = {}
        for name, values in packed["candidates"].items():
            c = dict(zip(CANDIDATE_COLUMNS, values))
            c["mac_reduction"] = e["dense_macs"] / c["macs"]
            e["candidates"][name] = c
        rank_at = {
            (float(ratio), m): rank
            for ratio, ranks in packed["ranks"].items()
            for m, rank in zip(roundings, ranks)
        }
        e["rows"] = []
        for t, timing in packed["timing"].items():
            for (ratio, m), rank in rank_at.items():
                c = e["candidates"][f"r{rank}"]
                point = {"ratio": ratio, "round_to": m, "rank": rank, "threads": int(t)}
                point["factorized"] = c["factorized"]
                e["rows"].append(_unpacked_row(point, c, timing, f"r{rank}"))
        e["rounding"] = []
        for t, ratios in packed["rounding"].items():
            for (ratio, m), rounded in rank_at.items():
                plain = rank_at[(ratio, 1)]
                if m == 1 or rounded == plain:
                    continue
                big, small = e["candidates"][f"r{rounded}"], e["candidates"][f"r{plain}"]
                e["rounding"].append(
                    {
                        "threads": int(t),
                        "ratio": ratio,
                        "round_to": m,
                        "rank": plain,
                        "rounded_rank": rounded,
                        "mac_ratio": big["macs"] / small["macs"],
                        "time_ratio": ratios[f"r{plain}>r{rounded}"],
                    }
                )
        results["layers"].append(e)
    results["models"] = []
    for packed in data["models"]:
        e = {k: v for k, v in packed.items() if k not in ("candidates", "timing")}
        e["candidates"] = {
            name: dict(c, mac_reduction=e["dense_macs"] / c["macs"])
            for name, c in packed["candidates"].items()
        }
        e["rows"] = [
            _unpacked_row(
                {"ratio": c["ratio"], "round_to": c["round_to"], "threads": int(t)}, c, timing, n
            )
            for t, timing in packed["timing"].items()
            for n, c in e["candidates"].items()
        ]
        e["rounding"] = []
        for t, ratios in packed["rounding"].items():
            for name, c in e["candidates"].items():
                if c["round_to"] == 1:
                    continue
                plain = e["candidates"][f"g{c['ratio']}_round1"]
                e["rounding"].append(
                    {
                        "threads": int(t),
                        "ratio": c["ratio"],
                        "round_to": c["round_to"],
                        "mac_ratio": c["macs"] / plain["macs"],
                        "time_ratio": ratios[name],
                    }
                )
        results["models"].append(e)
    return results


def load(path):
    """The results dict of a `tflite_latency.json`, packed or not."""
    with open(path, encoding="utf-8") as f:
        return unpack(json.load(f))


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


def model_break_even(entry):
    """Thread count -> `latency_break_even` of a whole model's unrounded rows."""
    result = {}
    for threads in sorted({r["threads"] for r in entry["rows"]}):
        rows = [r for r in entry["rows"] if r["threads"] == threads and r["round_to"] == 1]
        result[str(threads)] = latency_break_even(
            [r["ratio"] for r in rows],
            [r["speedup"] for r in rows],
            [r["mac_reduction"] for r in rows],
        )
    return result


def _row(entry, ratio, threads, round_to=1):
    for r in entry["rows"]:
        if r["ratio"] == ratio and r["threads"] == threads and r["round_to"] == round_to:
            return r
    return None


def _break_even_cell(b):
    if b["status"] == "crosses":
        return f"{b['rank_ratio']:.2f} ({b['mac_reduction']:.2f}x MACs)"
    return {"pays_everywhere": "pays at all ratios", "never_pays": "never pays"}[b["status"]]


def _agreement(results):
    """How well the 1-thread CPU-time speedups agree with the ratio of minimum wall times."""
    logs = [
        abs(np.log(r["speedup"] / r["speedup_wall_min"]))
        for e in results["layers"] + results["models"]
        for r in e["rows"]
        if r["threads"] == 1 and "speedup_wall_min" in r
    ]
    if not logs:
        return ""
    return (
        "Check of the 1-thread metric: the CPU-time speedup and the ratio of the fastest wall "
        f"times differ by {100 * (np.exp(np.median(logs)) - 1):.0f}% (median over "
        f"{len(logs)} points, 90th percentile {100 * (np.exp(np.percentile(logs, 90)) - 1):.0f}%)."
    )


def _log_ticks(ax, limit):
    from matplotlib.ticker import FixedLocator
    from matplotlib.ticker import NullFormatter

    ticks = [t for t in (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24) if t <= limit]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(lambda v, _: f"{v:g}x")
        axis.set_minor_formatter(NullFormatter())


def to_markdown(results):
    """The markdown tables of benchmark 3."""
    settings = results["settings"]
    floor = ", ".join(f"{t} thread(s) {v:.1f} us" for t, v in results["invoke_floor_us"].items())
    parts = [
        bench_utils.machine_markdown(results["machine"]),
        f"Each speedup is the median over {settings['layer_rounds']} (layers) / "
        f"{settings['model_rounds']} (models) interleaved rounds of dense time / factorized "
        f"time ({settings.get('time_metric', 'wall time')}); efficiency = speedup / MAC "
        f"reduction (1.0: latency falls exactly as MACs). Fixed cost of one `invoke()` from "
        f"Python (a 1x1x1 conv): {floor}. {_agreement(results)}",
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
        be_rows = []
        for e in results["models"]:
            break_even = e.get("break_even") or model_break_even(e)
            be_rows.append([e["model"]] + [_break_even_cell(break_even[str(t)]) for t in threads])
        parts.append(
            "Whole-model latency break-even (unrounded ranks; where the measured speedup "
            "crosses 1):\n\n"
            + bench_utils.markdown_table(
                ["model"] + [f"latency break-even r/K ({t} thr)" for t in threads], be_rows
            )
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
    parts.append(
        "Every measurement (each layer's speedup, time and quartiles per rank and thread "
        "count) is in `tflite_latency.json`."
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
        _log_ticks(ax, limit * 1.2)
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


def render(results, output_dir=None, plot_dir=None):
    """Writes the PNGs and `tflite_latency.json` (`pack`ed) / `.md` of a results dict.

    Returns:
        The results dict with `plots` (the PNG paths) set.
    """
    plot_dir = plot_dir or os.path.join(bench_utils.BENCHMARKS_DIR, "plots")
    results["plots"] = [
        plot_speedup_vs_macs(results, os.path.join(plot_dir, "tflite_speedup_vs_macs.png")),
        plot_efficiency(results, os.path.join(plot_dir, "tflite_efficiency_vs_rank_ratio.png")),
        plot_sweeps(results, os.path.join(plot_dir, "tflite_rank_sweep.png")),
    ]
    markdown = to_markdown(results)
    bench_utils.write_results("tflite_latency", pack(results), markdown, output_dir, compact=True)
    return results

"""What the example scripts report: results.json, per-layer rank rows, text tables.

Every script writes `<run_dir>/results.json` with the same top-level keys, so
benchmarks can compare runs of different methods:

    script, method, run_dir, config, dataset
    accuracy   {"trained": top-1 of the trained (dense or dense-projected)
                model, "compact": of the factorized, BN-folded Keras model
                (what the .tflite files hold), "compact_keras": of
                compact.keras (factorized, BN not folded),
                "tflite_<quantization>": of each .tflite file, ...}
    costs      {"dense" | "dense_folded" | "trained" | "compact" |
                "compact_folded": {"params", "macs", "conv_macs",
                "keras_bytes", "file"}}, each of one model: the dense
                architecture, with BN folded, the trained model
                (`file`, its bytes), compact.keras and the model the
                .tflite files hold (BN folded)
    macs_ratio, conv_macs_ratio, params_ratio   dense_folded / compact_folded
    ranks      {layer: rank} of the compressed layers
    layers     per layer: max_rank (K), rank, break_even, energy_kept, macs
    tflite     {quantization: {"path", "bytes", "max_error", "ops", ...}}
    seconds    wall times ("train", "export", "total", ...)
    history    one dict per epoch (Keras logs)

and `<run_dir>/report.txt` with the tables printed at the end of the run.
"""

import dataclasses
import json
import os

import example_training
import numpy as np

import lrpet_tf
from lrpet_tf import keras
from lrpet_tf.graph import format_table  # re-exported for the scripts

__all__ = [
    "compression_ratios",
    "cost_row",
    "finish_run",
    "format_table",
    "layer_rows",
    "results_table",
    "run_costs",
    "start_run",
    "write_json",
    "write_report",
]


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write_json(path, value):
    """Writes `value` (numpy scalars and arrays allowed) as indented JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_plain(value), f, indent=2)
    return path


def cost_row(model, path=None):
    """`{"params", "macs", "conv_macs", "keras_bytes", "file"}` of one model (MACs per example).

    Args:
        model: The model counted.
        path: The `.keras` file that holds exactly this model, if any
            (`keras_bytes` is its size, `file` its name).
    """
    report = lrpet_tf.model_report(model)
    exists = bool(path) and os.path.exists(path)
    return {
        "params": report.total_params,
        "macs": report.total_macs,
        "conv_macs": report.conv_macs,
        "keras_bytes": os.path.getsize(path) if exists else None,
        "file": os.path.basename(path) if exists else None,
    }


def run_costs(dense, trained, trained_path, compact, compact_path, folded):
    """The `costs` of results.json: each entry counts one model, and its file holds that model.

    Args:
        dense: The dense architecture (the model compressed, or its untrained
            twin).
        trained: The trained model, saved at `trained_path`.
        compact: The compact model as saved at `compact_path` (factorized,
            BN not folded).
        folded: `compact` with BN folded: what the .tflite files hold.

    Returns:
        A dict with `dense`, `dense_folded` (BN folded), `trained`,
        `compact` and `compact_folded`, each a `cost_row`.
    """
    return {
        "dense": cost_row(dense),
        "dense_folded": cost_row(lrpet_tf.fold_batchnorm(dense)),
        "trained": cost_row(trained, trained_path),
        "compact": cost_row(compact, compact_path),
        "compact_folded": cost_row(folded),
    }


def compression_ratios(costs):
    """`macs_ratio`, `conv_macs_ratio`, `params_ratio`: dense over compact, both BN-folded.

    Both models as the .tflite files hold them, so folding BN (which removes
    its parameters from both) does not count as compression.
    """
    dense, compact = costs["dense_folded"], costs["compact_folded"]
    return {
        "macs_ratio": dense["macs"] / compact["macs"],
        "conv_macs_ratio": dense["conv_macs"] / compact["conv_macs"],
        "params_ratio": dense["params"] / compact["params"],
    }


def layer_rows(model, ranks=None):
    """Per conv/dense layer: K, rank, break-even rank, energy kept and MACs.

    Args:
        model: The trained (uncompressed) model.
        ranks: Layer name -> the rank it keeps; other layers report their
            numerical rank.

    Returns:
        A list of dicts with keys `name`, `kernel_shape`, `max_rank`, `rank`,
        `break_even`, `energy_kept`, `macs`, `projected` (a rank was given)
        and `compressed` (rank given and below break-even).
    """
    ranks = dict(ranks or {})
    rows = []
    for cost in lrpet_tf.model_report(model, ranks=ranks).layers:
        if cost.max_rank is None:
            continue
        rows.append(
            {
                "name": cost.name,
                "kernel_shape": list(cost.kernel_shape or ()),
                "max_rank": cost.max_rank,
                "rank": cost.rank,
                "break_even": cost.break_even,
                "energy_kept": cost.energy_kept,
                "macs": cost.macs,
                "projected": cost.name in ranks,
                "compressed": cost.name in ranks and cost.rank < cost.break_even,
            }
        )
    return rows


def results_table(results):
    """The summary table of a run: one row per model file, then one summary line.

    Each row's accuracy, params, MACs and bytes describe one model: the
    trained model (its `.keras` file), compact.keras (factorized, BN not
    folded; left out when it is the trained model itself) and each .tflite
    file (the compact model with BN folded). The summary line compares the
    BN-folded dense and compact models; a dense baseline claims no
    compression.
    """
    costs, accuracy = results["costs"], results["accuracy"]
    trained, compact, folded = costs["trained"], costs["compact"], costs["compact_folded"]
    rows = [
        [
            results.get("trained_label", "trained"),
            _percent(accuracy.get("trained")),
            trained["params"],
            trained["macs"],
            trained["keras_bytes"],
            None,
        ]
    ]
    if results.get("compact_label"):
        rows.append(
            [
                results["compact_label"],
                _percent(accuracy.get("compact_keras")),
                compact["params"],
                compact["macs"],
                compact["keras_bytes"],
                None,
            ]
        )
    for quantization, info in results.get("tflite", {}).items():
        rows.append(
            [
                f"{os.path.basename(info['path'])} (BN folded)",
                _percent(accuracy.get(f"tflite_{quantization}")),
                folded["params"],
                folded["macs"],
                info["bytes"],
                info.get("max_error"),
            ]
        )
    dataset = results["dataset"]
    config = results["config"]
    model = config.get("model") or os.path.basename(config.get("model_path") or "")
    title = (
        f"{results['script']} ({results['method']}): {model} on "
        f"{dataset['name']} ({dataset['train']} train / {dataset['test']} test images)"
    )
    table = format_table(
        ["model", "accuracy %", "params", "MACs", "file bytes", "max |TFLite-Keras|"],
        rows,
        title=title,
    )
    seconds = f"({results['seconds']['total']:.0f} s)"
    if results["method"] == "dense":
        return (
            f"{table}\ndense baseline, nothing compressed: {folded['macs']:,} MACs, "
            f"{folded['params']:,} params with BN folded {seconds}"
        )
    summary = (
        f"{results['macs_ratio']:.2f}x fewer MACs ({results['conv_macs_ratio']:.2f}x conv), "
        f"{results['params_ratio']:.2f}x fewer params than "
        f"{results.get('reference_label', 'the dense model')}, both with BN folded"
    )
    if accuracy.get("trained") is not None and accuracy.get("compact") is not None:
        change = 100 * (accuracy["compact"] - accuracy["trained"])
        summary = f"accuracy change {change:+.2f} points, " + summary
    return f"{table}\n{summary} {seconds}"


def _percent(value):
    return None if value is None else 100.0 * value


def rank_table(layers):
    """Per-layer table of `layer_rows` output."""
    rows = [
        [
            r["name"],
            "x".join(map(str, r["kernel_shape"])),
            r["max_rank"],
            r["rank"],
            r["break_even"],
            r["energy_kept"],
            r["macs"],
        ]
        for r in layers
    ]
    return format_table(
        ["layer", "kernel", "K", "rank", "break-even", "energy kept", "MACs (dense)"],
        rows,
        title="Ranks per layer:",
    )


def start_run(config):
    """The start of a training example: its folder, its config.json, its seed, data and strategy.

    Creates `config.run_dir()`, writes the config there as config.json, seeds
    Keras (`config.seed`), loads the data and makes the distribution strategy.

    Returns:
        `(run_dir, data, strategy)`.
    """
    run_dir = config.run_dir()
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))
    keras.utils.set_random_seed(config.seed)
    data = config.load_data()
    return run_dir, data, example_training.make_strategy(config.strategy)


def finish_run(run_dir, results, stages, extra_sections=()):
    """The end of a training example: its files and what it prints.

    Adds the stage times to `results` (`results["stages"]`), writes
    results.json and report.txt (`write_report`) into `run_dir`, prints the
    report and the stage summary, and returns `results`.
    """
    results["stages"] = stages.rows
    write_json(os.path.join(run_dir, "results.json"), results)
    print(write_report(run_dir, results, extra_sections))
    print()
    print(stages.summary())
    return results


def write_report(run_dir, results, extra_sections=()):
    """Writes report.txt (per-layer ranks, extra sections, summary) and returns it."""
    parts = [rank_table(results["layers"])] if results.get("layers") else []
    parts.extend(str(s) for s in extra_sections if s)
    parts.append(results_table(results))
    text = "\n\n".join(parts)
    with open(os.path.join(run_dir, "report.txt"), "w") as f:
        f.write(text + "\n")
    return text

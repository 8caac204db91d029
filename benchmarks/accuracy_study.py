"""Benchmark 1, accuracy at equal compression: LRPET against its ablations and baselines.

One driver trains a CIFAR-style ResNet-20 (widths 16/32/64, option-A
shortcuts) on 28x28 Fashion-MNIST (Debian's `dataset-fashion-mnist`) with one
recipe and one epoch budget for every variant, at two compression levels
(LRPET prune ratios g = 0.5 and 0.75), and reports the compact model's test
accuracy, MACs, parameters and .tflite size:

* `dense`: the same network and recipe without compression (the baseline);
* `lrpet`: LRPET with scale energy transfer and BN rectification
  (Guo et al., arXiv 2204.05566), one projection per epoch;
* `lrpet_no_energy_transfer`, `lrpet_no_bn_rectification`: its ablations;
* `trp`: TRP-style periodic hard truncation (LRPET without energy transfer
  and without BN rectification);
* `train_then_compress`: dense training for E - F epochs, truncated SVD to
  LRPET's ranks (`lrpet_tf.factorize`), F epochs of fine-tuning of the compact
  model (`examples/compress.py --method=svd`); the dense pre-training is one
  run (`dense_pretrain`) shared by both levels;
* `scratch`: the factorized architecture at LRPET's ranks trained directly;
* `svd`: SVD training (Yang et al., CVPR-W 2020; channel-wise, Hoyer), pruned
  to the compact MACs of LRPET at the same level (`train_svd --macs_target`)
  and fine-tuned; its three stages split the same E epochs.

Every run goes through the examples' importable `run` functions
(`train_lrpet.run`, `compress.run`, `train_svd.run`), keeps its models in
`<runs_dir>/<run>/` (resumable: an interrupted run continues from its last
epoch) and writes `<results_dir>/accuracy_study/<run>.json` when it finishes;
runs whose JSON exists are skipped, so an interrupted study continues where it
stopped. The table goes to `<results_dir>/accuracy_study.md`, all runs to
`accuracy_study.json` and the plot to `<plot_dir>/accuracy_study_vs_macs.png`.

Usage:
    PYTHONPATH=. python benchmarks/accuracy_study.py      # the study (~2.5 h on 2 loaded cores)
    PYTHONPATH=. python benchmarks/accuracy_study.py --smoke   # about a minute, synthetic data
    PYTHONPATH=. python benchmarks/accuracy_study.py --report_only   # table and plot only
"""

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.accuracy_study
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

_ROOT = os.path.dirname(bench_utils.BENCHMARKS_DIR)
sys.path.insert(0, os.path.join(_ROOT, "examples"))

import compress  # noqa: E402
import example_models  # noqa: E402
import example_reports  # noqa: E402
import train_lrpet  # noqa: E402
import train_svd  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

__all__ = [
    "LABELS",
    "VARIANTS",
    "RunSpec",
    "StudyConfig",
    "aggregate",
    "lrpet_macs_fraction",
    "plan",
    "render",
    "run",
    "run_one",
    "smoke_config",
]

NAME = "accuracy_study"
# Variant -> table label, in table order.
LABELS = {
    "dense": "dense baseline",
    "lrpet": "LRPET (scale energy transfer + BN rectification)",
    "lrpet_no_energy_transfer": "LRPET without energy transfer",
    "lrpet_no_bn_rectification": "LRPET without BN rectification",
    "trp": "TRP-style periodic hard truncation",
    "train_then_compress": "dense, then truncated SVD, then fine-tune",
    "scratch": "compact architecture from scratch",
    "svd": "SVD training (Hoyer), pruned to LRPET's MACs, fine-tuned",
}
VARIANTS = tuple(LABELS)
# The LRPET callback settings of the train_lrpet variants.
_LRPET_SETTINGS = {
    "lrpet": dict(method="lrpet", energy_transfer="scale", bn_rectification=True),
    "lrpet_no_energy_transfer": dict(method="lrpet", energy_transfer=None, bn_rectification=True),
    "lrpet_no_bn_rectification": dict(
        method="lrpet", energy_transfer="scale", bn_rectification=False
    ),
    "trp": dict(method="lrpet", energy_transfer=None, bn_rectification=False),
    "scratch": dict(method="scratch"),
    "dense": dict(method="dense"),
}
PRETRAIN = "dense_pretrain"


@dataclasses.dataclass
class StudyConfig:
    """The study: data, model, budget, variants, levels, seeds and folders.

    Attributes:
        dataset, train_limit, test_limit, model, width: Data and network
            (as `train_lrpet.TrainConfig`).
        epochs: E, the training epochs of every variant.
        finetune_epochs: F, the fine-tuning epochs of `train_then_compress`
            (after E - F dense epochs) and of SVD training's last stage.
        batch_size: Global batch size.
        recipe: Recipe of every training run (`example_recipes.RECIPES`).
        schedule, augment: Overrides of every recipe's learning-rate schedule
            and augmentation (`"none"`: no augmentation; None: the recipe's).
        finetune_recipe: Recipe of the fine-tuning of `train_then_compress`.
        finetune_learning_rate: Initial learning rate of SVD training's
            fine-tuning stage (the fine-tuning recipe's, so both compress-then-
            fine-tune baselines fine-tune alike).
        svd_sparsity_weight: lambda_s of SVD training's sparsity stage.
        levels: LRPET prune ratios g (ranks r = int(K - K*g) for every conv).
        seeds: Seeds of the `seeded_variants`; the others run with `seeds[0]`.
        seeded_variants: Variants run with every seed.
        variants: Variants to run (a subset of `VARIANTS`).
        validate: Evaluate the test set after every epoch (costs time).
        runs_dir: Folder of the run folders (models, .tflite, report.txt).
        results_dir: Folder of the result files (`accuracy_study.json`,
            `.md` and `accuracy_study/<run>.json`).
        plot_dir: Folder of the PNG plot.
        command: The command line, for the table.
        verbose: Keras fit verbosity.
    """

    dataset: str = "fashion_mnist"
    train_limit: int = 4000
    test_limit: int = None
    model: str = "resnet20"
    width: int = None
    epochs: int = 6
    finetune_epochs: int = 2
    batch_size: int = 64
    recipe: str = "paper"
    finetune_recipe: str = "finetune"
    schedule: str = "cosine"
    augment: str = "none"
    finetune_learning_rate: float = 0.01
    svd_sparsity_weight: float = 0.01
    levels: tuple = (0.5, 0.75)
    seeds: tuple = (0, 1)
    seeded_variants: tuple = ("dense", "lrpet")
    variants: tuple = VARIANTS
    validate: bool = False
    runs_dir: str = os.path.join(_ROOT, "saved_models", NAME)
    results_dir: str = os.path.join(bench_utils.BENCHMARKS_DIR, "results")
    plot_dir: str = os.path.join(bench_utils.BENCHMARKS_DIR, "plots")
    command: str = None
    verbose: int = 2

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"Expected `variants` in {VARIANTS}. Received: variants={unknown}")
        if not self.seeds:
            raise ValueError("Expected at least one seed. Received: seeds=()")
        if self.epochs < 1:
            raise ValueError(f"Expected `epochs` >= 1. Received: epochs={self.epochs}")
        if "train_then_compress" in self.variants and not 0 < self.finetune_epochs < self.epochs:
            raise ValueError(
                "Expected 0 < `finetune_epochs` < `epochs` for train_then_compress. Received: "
                f"finetune_epochs={self.finetune_epochs}, epochs={self.epochs}"
            )

    @property
    def svd_epochs(self):
        """SVD training's (decomposed, sparsity, fine-tune) epochs: E - F split in two, then F."""
        rest = self.epochs - self.finetune_epochs
        return (max(1, rest - rest // 2), max(1, rest // 2), max(1, self.finetune_epochs))

    def json_dir(self):
        return os.path.join(self.results_dir, NAME)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the study: a variant at a level (None for dense) and a seed."""

    variant: str
    level: float
    seed: int

    @property
    def name(self):
        level = "" if self.level is None else f"_g{self.level}"
        return f"{self.variant}{level}_s{self.seed}"


def smoke_config(output_dir):
    """A quick study: synthetic 8x8 data, small_cnn of width 4, 1 epoch, LRPET and SVD."""
    return StudyConfig(
        dataset="synthetic",
        model="small_cnn",
        width=4,
        epochs=1,
        finetune_epochs=1,
        batch_size=64,
        levels=(0.5,),
        seeds=(0,),
        variants=("lrpet", "svd"),
        runs_dir=os.path.join(output_dir, "runs"),
        results_dir=output_dir,
        plot_dir=output_dir,
        command="accuracy_study.py --smoke",
        verbose=0,
    )


def plan(study):
    """The runs of a study in execution order (with the shared dense pre-training).

    Seed `seeds[0]` of every variant first (levels in order), the other seeds
    of `seeded_variants` last, so an interrupted study has every variant once
    before it has any second seed.

    Returns:
        A list of `RunSpec`; `train_then_compress` is preceded by its
        `dense_pretrain` run (level None).
    """
    first = study.seeds[0]
    specs = []
    for variant in study.variants:
        if variant == "dense":
            specs.append(RunSpec("dense", None, first))
            continue
        if variant == "train_then_compress":
            specs.append(RunSpec(PRETRAIN, None, first))
        specs.extend(RunSpec(variant, float(level), first) for level in study.levels)
    for seed in study.seeds[1:]:
        for variant in study.variants:
            if variant not in study.seeded_variants:
                continue
            if variant == "dense":
                specs.append(RunSpec("dense", None, seed))
            elif variant == "train_then_compress":
                specs.append(RunSpec(PRETRAIN, None, seed))
                specs.extend(RunSpec(variant, float(level), seed) for level in study.levels)
            else:
                specs.extend(RunSpec(variant, float(level), seed) for level in study.levels)
    return specs


def _common(study, spec):
    """Fields shared by every example config of a run."""
    return dict(
        dataset=study.dataset,
        train_limit=study.train_limit,
        test_limit=study.test_limit,
        batch_size=study.batch_size,
        schedule=study.schedule,
        augment=study.augment,
        seed=spec.seed,
        output_dir=os.path.join(study.runs_dir, spec.name),
        validate=study.validate,
        verbose=study.verbose,
        plots=False,
    )


def _train_config(study, spec, variant=None, **changes):
    """The `train_lrpet.TrainConfig` of a run (`variant` overrides the spec's settings)."""
    fields = dict(
        model=study.model,
        width=study.width,
        recipe=study.recipe,
        epochs=study.epochs,
        prune_ratio=spec.level if spec.level is not None else 0.5,
        **_common(study, spec),
    )
    fields.update(_LRPET_SETTINGS.get(variant or spec.variant, {}), **changes)
    return train_lrpet.TrainConfig(**fields)


def lrpet_macs_fraction(study, prune_ratio, input_shape, num_classes):
    """Compact MACs / dense MACs of LRPET at `prune_ratio` (a property of the ranks only).

    Builds the study's model, takes the ranks `lrpet_tf.LRPET` gives it and
    counts the factorized model's MACs (`lrpet_tf.factorize` keeps a layer
    dense where its rank is not below break-even), as the LRPET run's compact
    model will have them.
    """
    dense = example_models.build_model(study.model, input_shape, num_classes, study.width)
    callback = lrpet_tf.LRPET(prune_ratio=prune_ratio, verbose=0)
    callback.prepare(dense)
    compact = lrpet_tf.factorize(dense, ranks=dict(callback.ranks))
    return lrpet_tf.model_report(compact).total_macs / lrpet_tf.model_report(dense).total_macs


def _run_train_lrpet(study, spec):
    epochs = study.epochs - study.finetune_epochs if spec.variant == PRETRAIN else study.epochs
    variant = "dense" if spec.variant == PRETRAIN else spec.variant
    config = _train_config(study, spec, variant=variant, epochs=epochs)
    results = train_lrpet.run(config)
    return results, {"epochs": [epochs], "stages": ["train"]}


def _run_train_then_compress(study, spec):
    pretrain_dir = os.path.join(study.runs_dir, RunSpec(PRETRAIN, None, spec.seed).name)
    model_path = os.path.join(pretrain_dir, "trained.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path} is missing: run {PRETRAIN} first.")
    config = compress.CompressConfig(
        model_path=model_path,
        method="svd",
        prune_ratio=spec.level,
        recipe=study.finetune_recipe,
        epochs=study.finetune_epochs,
        standardize=True,
        **_common(study, spec),
    )
    results = compress.run(config)
    with open(os.path.join(pretrain_dir, "results.json")) as f:
        pretrain = json.load(f)
    extra = {
        "epochs": [study.epochs - study.finetune_epochs, study.finetune_epochs],
        "stages": ["dense", "fine-tune"],
        "pretrain_train_seconds": pretrain["seconds"]["train"],
        "pretrain_accuracy": pretrain["accuracy"]["compact"],
    }
    return results, extra


def _run_svd(study, spec, data_shape):
    macs_target = lrpet_macs_fraction(study, spec.level, *data_shape)
    decomposed, sparsity, finetune = study.svd_epochs
    config = train_svd.SVDConfig(
        model=study.model,
        width=study.width,
        recipe=study.recipe,
        scheme="channel",
        sparsity="hoyer",
        sparsity_weight=study.svd_sparsity_weight,
        macs_target=macs_target,
        decomposed_epochs=decomposed,
        sparsity_epochs=sparsity,
        finetune_epochs=finetune,
        finetune_learning_rate=study.finetune_learning_rate,
        **_common(study, spec),
    )
    results = train_svd.run(config)
    extra = {
        "epochs": [decomposed, sparsity, finetune],
        "stages": ["decomposed", "sparsity", "fine-tune"],
        "macs_target": macs_target,
    }
    return results, extra


def _summary(study, spec, results, extra, wall_seconds):
    """The per-run JSON: what the table needs, the report and the example's results."""
    costs = results["costs"]
    tflite = results.get("tflite", {}).get("float32", {})
    report_path = os.path.join(results["run_dir"], "report.txt")
    report = None
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = f.read()
    train_seconds = results["seconds"]["train"] + extra.pop("pretrain_train_seconds", 0.0)
    summary = {
        "run": spec.name,
        "variant": spec.variant,
        "label": LABELS.get(spec.variant, "dense pre-training of train_then_compress"),
        "level": spec.level,
        "seed": spec.seed,
        "script": results["script"],
        "accuracy": results["accuracy"]["compact"],
        "tflite_accuracy": results["accuracy"].get("tflite_float32"),
        "accuracies": results["accuracy"],
        "macs": costs["compact"]["macs"],
        "conv_macs": costs["compact"]["conv_macs"],
        "params": costs["compact"]["params"],
        "dense_macs": costs["dense"]["macs"],
        "dense_params": costs["dense"]["params"],
        "macs_ratio": costs["dense"]["macs"] / costs["compact"]["macs"],
        "params_ratio": costs["dense"]["params"] / costs["compact"]["params"],
        "tflite_bytes": tflite.get("bytes"),
        "tflite_verified": tflite.get("verified"),
        "ranks": results.get("ranks", {}),
        "total_rank": int(sum(results.get("ranks", {}).values())),
        "energy": results.get("energy"),
        "train_images": results["dataset"]["train"],
        "test_images": results["dataset"]["test"],
        "batch_size": study.batch_size,
        "train_seconds": train_seconds,
        "export_seconds": results["seconds"]["export"],
        "wall_seconds_this_process": wall_seconds,
        "history": results.get("history", []),
        "report": report,
        "results_table": example_reports.results_table(results),
        "run_dir": results["run_dir"],
        "config": results["config"],
        "finished": bench_utils.machine_info()["date"],
        "load_average": bench_utils.load_average(),
        **extra,
    }
    summary["epochs_total"] = int(sum(summary["epochs"]))
    return summary


def run_one(study, spec, data_shape=None):
    """Runs one `RunSpec` through the examples and writes its JSON.

    Args:
        study: The `StudyConfig`.
        spec: The run.
        data_shape: `(input_shape, num_classes)` of the dataset (for the SVD
            runs' MACs target); loaded when None.

    Returns:
        The run's summary dict (also in `<results_dir>/accuracy_study/<run>.json`).
    """
    start = time.perf_counter()
    started = time.time()
    keras.backend.clear_session()
    if spec.variant == "train_then_compress":
        results, extra = _run_train_then_compress(study, spec)
    elif spec.variant == "svd":
        if data_shape is None:
            data = _train_config(study, spec).load_data()
            data_shape = (data.input_shape, data.num_classes)
        results, extra = _run_svd(study, spec, data_shape)
    else:
        results, extra = _run_train_lrpet(study, spec)
    summary = _summary(study, spec, results, extra, time.perf_counter() - start)
    summary["started_unix"], summary["finished_unix"] = started, time.time()
    example_reports.write_json(os.path.join(study.json_dir(), f"{spec.name}.json"), summary)
    keras.backend.clear_session()
    return summary


def _load_runs(study, specs):
    runs = {}
    for spec in specs:
        path = os.path.join(study.json_dir(), f"{spec.name}.json")
        if os.path.exists(path):
            with open(path) as f:
                runs[spec.name] = json.load(f)
    return runs


def _spread(values):
    values = np.asarray(values, np.float64)
    return float(values.mean()), float((values.max() - values.min()) / 2)


def aggregate(study, runs):
    """One row per (variant, level) over seeds, in table order.

    Returns:
        A list of dicts: `variant`, `label`, `level`, `seeds`, `accuracy`
        (mean, %), `spread` (half the range over seeds, %), `per_seed`,
        `tflite_accuracy`, `delta_vs_dense` (points, vs the dense mean),
        `macs`, `macs_ratio`, `params`, `tflite_bytes`, `epochs`,
        `train_seconds` and `wall_seconds` (mean per run).
    """
    groups = {}
    for summary in runs.values():
        if summary["variant"] == PRETRAIN:
            continue
        groups.setdefault((summary["variant"], summary["level"]), []).append(summary)
    dense = groups.get(("dense", None))
    dense_mean = _spread([100 * s["accuracy"] for s in dense])[0] if dense else None
    rows = []
    order = {v: i for i, v in enumerate(VARIANTS)}
    for (variant, level), members in sorted(
        groups.items(), key=lambda kv: (kv[0][1] or 0.0, order[kv[0][0]])
    ):
        members = sorted(members, key=lambda s: s["seed"])
        accuracy, spread = _spread([100 * s["accuracy"] for s in members])
        tflite = [s["tflite_accuracy"] for s in members if s["tflite_accuracy"] is not None]
        rows.append(
            {
                "variant": variant,
                "label": LABELS[variant],
                "level": level,
                "seeds": [s["seed"] for s in members],
                "accuracy": accuracy,
                "spread": spread,
                "per_seed": [100 * s["accuracy"] for s in members],
                "tflite_accuracy": 100 * float(np.mean(tflite)) if tflite else None,
                "delta_vs_dense": None if dense_mean is None else accuracy - dense_mean,
                "macs": int(np.mean([s["macs"] for s in members])),
                "macs_ratio": float(np.mean([s["macs_ratio"] for s in members])),
                "params": int(np.mean([s["params"] for s in members])),
                "params_ratio": float(np.mean([s["params_ratio"] for s in members])),
                "tflite_bytes": int(np.mean([s["tflite_bytes"] or 0 for s in members])),
                "epochs": "+".join(str(e) for e in members[0]["epochs"]),
                "train_images": members[0]["train_images"],
                "train_seconds": float(np.mean([s["train_seconds"] for s in members])),
                "wall_seconds": float(
                    np.mean([s["train_seconds"] + s["export_seconds"] for s in members])
                ),
            }
        )
    return rows


def _recipe_text(study, name):
    """`recipe` with the study's overrides, in words."""
    recipe = train_lrpet.TrainConfig(
        recipe=name, schedule=study.schedule, augment=study.augment
    ).make_recipe()
    optimizer = f"SGD momentum {recipe.momentum:g}" if recipe.optimizer == "sgd" else "Adam"
    schedule = {
        "cosine": "cosine decay to 0",
        "constant": "constant",
        "step": "x{:g} at {} of the epochs".format(
            recipe.lr_decay, "/".join(f"{f:.0%}" for f in recipe.lr_steps)
        ),
    }[recipe.schedule]
    return (
        f"`{name}`: {optimizer}{' (Nesterov)' if recipe.nesterov else ''}, lr "
        f"{recipe.learning_rate:g}, {schedule}, coupled L2 {recipe.weight_decay:g}, "
        f"augmentation {recipe.augment or 'none'}"
    )


def _budget_text(study, runs):
    total = sum(s["train_seconds"] + s["export_seconds"] for s in runs.values())
    span = 0.0
    if runs:
        span = max(s["finished_unix"] for s in runs.values()) - min(
            s["started_unix"] for s in runs.values()
        )
    images = next(iter(runs.values()))["train_images"] if runs else study.train_limit
    decomposed, sparsity, finetune = study.svd_epochs
    text = (
        f"Budget: every variant trains E = {study.epochs} epochs of the first {images:,} "
        f"training images (batch {study.batch_size}; recipe {_recipe_text(study, study.recipe)})."
    )
    if "train_then_compress" in study.variants:
        text += (
            f" Train-then-compress trains the dense model {study.epochs - study.finetune_epochs}"
            f" epochs with it and fine-tunes the compact model {study.finetune_epochs} (recipe "
            f"{_recipe_text(study, study.finetune_recipe)})."
        )
    if "svd" in study.variants:
        text += (
            f" SVD training runs {decomposed} + {sparsity} + {finetune} epochs (decomposed, "
            f"sparsity, fine-tune), each stage with the recipe restarted, the fine-tuning at lr "
            f"{study.finetune_learning_rate:g}."
        )
    return text + (
        " Accuracy is measured once, after training, on all test images. Sum of the runs' "
        f"training + export times: {total / 3600:.2f} h; wall clock from the first run's start "
        f"to the last run's end: {span / 3600:.2f} h."
    )


def render(study, runs, machine):
    """The markdown: budget, command, machine, the table and the two scripts' reports."""
    rows = aggregate(study, runs)
    headers = [
        "variant",
        "g",
        "seeds",
        "compact test acc. %",
        "vs dense (points)",
        ".tflite acc. %",
        "MACs",
        "MACs ratio",
        "params",
        ".tflite bytes",
        "epochs",
        "time per run (min)",
    ]
    table_rows = []
    for row in rows:
        accuracy = f"{row['accuracy']:.2f}"
        if len(row["seeds"]) > 1:
            accuracy += f" ± {row['spread']:.2f} (" + ", ".join(f"{a:.2f}" for a in row["per_seed"])
            accuracy += ")"
        delta = None if row["delta_vs_dense"] is None else f"{row['delta_vs_dense']:+.2f}"
        table_rows.append(
            [
                row["label"],
                "-" if row["level"] is None else f"{row['level']:g}",
                ",".join(str(s) for s in row["seeds"]),
                accuracy,
                delta if row["variant"] != "dense" else "-",
                row["tflite_accuracy"],
                row["macs"],
                f"{row['macs_ratio']:.2f}x",
                row["params"],
                row["tflite_bytes"],
                row["epochs"],
                row["wall_seconds"] / 60,
            ]
        )
    dataset = next(iter(runs.values()))["config"]["dataset"] if runs else study.dataset
    parts = [
        f"## Accuracy at equal compression ({study.model} on {dataset})",
        "",
        _budget_text(study, runs),
        "",
        f"Command: `{study.command or 'python benchmarks/accuracy_study.py'}`",
        "",
        bench_utils.machine_markdown(machine),
        "",
        bench_utils.markdown_table(headers, table_rows),
        "",
        "Compact test acc.: top-1 of the factorized, BN-folded Keras model on all test images, "
        "mean over seeds ± half their range (the seeds' values in brackets); vs dense: minus the "
        "dense baseline's mean. MACs and params per image of the compact model (MACs ratio: "
        "dense / compact). Time per run: training + export (incl. test evaluations), wall "
        "clock on the shared machine; train-then-compress includes its dense pre-training.",
    ]
    pretrain = [s for s in runs.values() if s["variant"] == PRETRAIN]
    for s in pretrain:
        parts.append(
            f"\nDense pre-training of train-then-compress ({s['epochs_total']} epochs, seed "
            f"{s['seed']}): {100 * s['accuracy']:.2f}% test accuracy."
        )
    reports = [
        s
        for s in sorted(runs.values(), key=lambda s: (s["level"] or 0, s["run"]))
        if s["variant"] in ("lrpet", "svd") and s["seed"] == study.seeds[0]
    ]
    if reports:
        parts.append("\n### Reports of train_lrpet.py and train_svd.py (report.txt summaries)\n")
        for s in reports:
            parts.append(f"`{s['run']}`:\n\n```\n{s['results_table']}\n```\n")
    return "\n".join(parts)


def plot(study, runs, path):
    """Accuracy of the compact model against its MACs, one marker per variant (seed error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = aggregate(study, runs)
    fig, ax = plt.subplots(figsize=(9.5, 6))
    markers = dict(zip(VARIANTS, "*osD^vPX"))
    colors = dict(zip(VARIANTS, plt.get_cmap("tab10").colors))
    # Variants at one level share their MACs: offset them a little along x.
    offsets = dict(zip(VARIANTS, np.linspace(-0.035, 0.035, len(VARIANTS))))
    labelled = set()
    for row in rows:
        variant = row["variant"]
        x = row["macs"] / 1e6 * (1 + (offsets[variant] if variant != "dense" else 0))
        ax.errorbar(
            x,
            row["accuracy"],
            yerr=row["spread"] if len(row["seeds"]) > 1 else None,
            marker=markers[variant],
            ms=13 if variant == "dense" else 8,
            color=colors[variant],
            capsize=3,
            linestyle="none",
            label=None if variant in labelled else LABELS[variant],
        )
        labelled.add(variant)
    dense = [r for r in rows if r["variant"] == "dense"]
    if dense:
        ax.axhline(dense[0]["accuracy"], color=colors["dense"], lw=0.8, ls="--", alpha=0.6)
    for level in sorted({r["level"] for r in rows if r["level"] is not None}):
        macs = [r["macs"] for r in rows if r["level"] == level and r["variant"] != "svd"]
        if macs:
            ax.annotate(
                f"g={level:g}",
                (macs[0] / 1e6, ax.get_ylim()[0]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=9,
                color="0.3",
            )
    dataset = next(iter(runs.values()))["config"]["dataset"] if runs else study.dataset
    images = next(iter(runs.values()))["train_images"] if runs else None
    ax.set_xlabel(
        "MACs per image of the compact model (millions; variants offset ±3.5% for clarity)"
    )
    ax.set_ylabel("test top-1 accuracy of the compact model (%)")
    ax.set_title(
        f"{study.model} on {dataset}: {study.epochs} epochs of {images:,} images per variant"
        + "\n(error bars: half the range over seeds; dashed: dense mean)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, borderaxespad=0)
    return bench_utils.save_figure(fig, path)


def run(study=None, smoke=False, output_dir=None, report_only=False):
    """Runs the study (skipping finished runs), writes the JSON, markdown and plot.

    Args:
        study: A `StudyConfig` (default: the defaults).
        smoke: Run `smoke_config(output_dir)` instead.
        output_dir: For `smoke`: where everything goes (default: a folder
            under /tmp).
        report_only: Do not train; rebuild the table and plot from the runs'
            JSON files.

    Returns:
        A dict: `study` (the config), `runs` (run name -> summary), `rows`
        (`aggregate`), `machine`, `markdown`, `plot` and `pending` (runs not
        finished yet).
    """
    if smoke:
        study = smoke_config(output_dir or os.path.join("/tmp", f"{NAME}_smoke"))
    study = study or StudyConfig()
    specs = plan(study)
    os.makedirs(study.json_dir(), exist_ok=True)
    data_shape = None
    for index, spec in enumerate(specs):
        path = os.path.join(study.json_dir(), f"{spec.name}.json")
        if report_only or os.path.exists(path):
            continue
        logging.info("Run %d/%d: %s", index + 1, len(specs), spec.name)
        if spec.variant == "svd" and data_shape is None:
            data = _train_config(study, spec).load_data()
            data_shape = (data.input_shape, data.num_classes)
        summary = run_one(study, spec, data_shape)
        logging.info(
            "%s: %.2f%% at %s MACs (%.0f s)",
            spec.name,
            100 * summary["accuracy"],
            f"{summary['macs']:,}",
            summary["train_seconds"] + summary["export_seconds"],
        )
    runs = _load_runs(study, specs)
    machine = bench_utils.machine_info()
    markdown = render(study, runs, machine)
    plot_path = None
    if runs:
        plot_path = plot(study, runs, os.path.join(study.plot_dir, f"{NAME}_vs_macs.png"))
    payload = {
        "study": dataclasses.asdict(study),
        "machine": machine,
        "rows": aggregate(study, runs),
        "runs": {name: {k: v for k, v in s.items() if k != "history"} for name, s in runs.items()},
        "pending": [s.name for s in specs if s.name not in runs],
    }
    bench_utils.write_results(NAME, payload, markdown, study.results_dir)
    return {**payload, "markdown": markdown, "plot": plot_path}


FLAGS = flags.FLAGS


def define_flags():
    """The script's flags (defined only when run as a script)."""
    defaults = StudyConfig()
    flags.DEFINE_bool("smoke", False, "Synthetic data, tiny width, 1 epoch, LRPET and SVD only.")
    flags.DEFINE_bool("report_only", False, "Only rebuild the table and plot from finished runs.")
    flags.DEFINE_string("dataset", defaults.dataset, "Dataset (examples/example_data.py).")
    flags.DEFINE_integer("train_limit", defaults.train_limit, "Use the first N training images.")
    flags.DEFINE_integer("test_limit", None, "Use the first N test images.")
    flags.DEFINE_string("model", defaults.model, "Reference model (examples/example_models.py).")
    flags.DEFINE_integer("width", None, "First-stage filters (default: the paper's, 16).")
    flags.DEFINE_integer("epochs", defaults.epochs, "E: training epochs of every variant.")
    flags.DEFINE_integer("finetune_epochs", defaults.finetune_epochs, "F: fine-tuning epochs.")
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Global batch size.")
    flags.DEFINE_string("recipe", defaults.recipe, "Training recipe of every variant.")
    flags.DEFINE_string("finetune_recipe", defaults.finetune_recipe, "Train-then-compress's.")
    flags.DEFINE_string("schedule", defaults.schedule, "Learning-rate schedule of every recipe.")
    flags.DEFINE_string("augment", defaults.augment, 'Augmentation of every recipe ("none").')
    flags.DEFINE_float(
        "finetune_learning_rate", defaults.finetune_learning_rate, "SVD fine-tuning lr."
    )
    flags.DEFINE_float("svd_sparsity_weight", defaults.svd_sparsity_weight, "Hoyer lambda_s.")
    flags.DEFINE_list("levels", [str(g) for g in defaults.levels], "LRPET prune ratios g.")
    flags.DEFINE_list("seeds", [str(s) for s in defaults.seeds], "Seeds.")
    flags.DEFINE_list("seeded_variants", list(defaults.seeded_variants), "Run with every seed.")
    flags.DEFINE_list("variants", list(VARIANTS), "Variants to run.")
    flags.DEFINE_bool("validate", defaults.validate, "Evaluate the test set every epoch.")
    flags.DEFINE_string("runs_dir", defaults.runs_dir, "Folder of the run folders.")
    flags.DEFINE_string("results_dir", defaults.results_dir, "Folder of the result files.")
    flags.DEFINE_string("plot_dir", defaults.plot_dir, "Folder of the plot.")


def main(argv):
    del argv
    if FLAGS.smoke:
        result = run(smoke=True)
    else:
        study = StudyConfig(
            dataset=FLAGS.dataset,
            train_limit=FLAGS.train_limit,
            test_limit=FLAGS.test_limit,
            model=FLAGS.model,
            width=FLAGS.width,
            epochs=FLAGS.epochs,
            finetune_epochs=FLAGS.finetune_epochs,
            batch_size=FLAGS.batch_size,
            recipe=FLAGS.recipe,
            finetune_recipe=FLAGS.finetune_recipe,
            schedule=FLAGS.schedule,
            augment=FLAGS.augment,
            finetune_learning_rate=FLAGS.finetune_learning_rate,
            svd_sparsity_weight=FLAGS.svd_sparsity_weight,
            levels=tuple(float(g) for g in FLAGS.levels),
            seeds=tuple(int(s) for s in FLAGS.seeds),
            seeded_variants=tuple(FLAGS.seeded_variants),
            variants=tuple(FLAGS.variants),
            validate=FLAGS.validate,
            runs_dir=FLAGS.runs_dir,
            results_dir=FLAGS.results_dir,
            plot_dir=FLAGS.plot_dir,
            command=bench_utils.command_line(drop=("--report_only",)),
        )
        result = run(study, report_only=FLAGS.report_only)
    print(result["markdown"])
    if result["pending"]:
        print(f"Pending runs: {', '.join(result['pending'])}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark: low-rank + int8 for Android, dense float vs compact float / PTQ int8 / QAT int8.

Issue 5's acceptance run. In one process (tf_keras mode: quantization-aware
training needs tensorflow-model-optimization), on Fashion-MNIST (Debian's
`dataset-fashion-mnist`) with a small residual CNN:

1. trains the dense model and the LRPET model with the same recipe and budget
   (`examples/train_lrpet.py`'s `run`, `--method=dense` and `--method=lrpet`);
2. builds the compact model (`lrpet_tf.factorize` with LRPET's ranks, then
   `lrpet_tf.fold_batchnorm`);
3. writes four .tflite files: dense float32, compact float32, compact
   post-training int8 (calibrated on training images) and compact QAT int8
   (`lrpet_tf.export.prepare_qat`, a few epochs of fine-tuning, int8 without
   calibration data);
4. measures each file's top-1 accuracy on the whole test set (10,000 images),
   its size, and its single-thread latency (`lrpet_tf.measure_latency`, the
   four files interleaved round by round, median over rounds of each round's
   median; speedups are medians of per-round ratios);
5. checks the issue's bar: the compact int8 file at least 6x smaller than the
   dense float32 file, at most 1 point of accuracy below the dense float model.

Before training it also exports untrained compact models at a few prune
ratios, to show how the int8 file size follows the ranks (it does not depend
on the training): `size_plan` in the results.

The model is `small_cnn` by default (conv stem, two residual blocks with a
1x1 projection shortcut; `--model` picks another, the CIFAR ResNets included:
`prepare_qat` quantizes their option-A shortcuts). Optionally (`--exclude`)
LRPET leaves some convs dense, e.g. the 1-channel stem.

Results: one entry per run, keyed by its name (`--run_name`, by default
`<runs_dir>`'s folder name without `int8_study_`), in
`<output_dir>/int8_study.json`, with `int8_study.md` the tables of every run
(default `benchmarks/results/`; `--render_from` rewrites the tables from the
JSON); models and files in `<runs_dir>` (default `saved_models/int8_study/`).
The training runs resume like the examples' (a finished run folder is
reused; the table says so).

Usage:
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/int8_study.py \\
        --train_limit=12000 --epochs=6 --qat_epochs=2     # the study (~30 min on 2 loaded cores)
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/int8_study.py --smoke   # ~1 minute
    PYTHONPATH=. python benchmarks/int8_study.py --render_from=benchmarks/results/int8_study.json
"""

import dataclasses
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.int8_study
    import bench_utils
    import rank_allocation
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils
    from benchmarks import rank_allocation

bench_utils.add_examples_to_path()

import example_config  # noqa: E402
import example_export  # noqa: E402
import example_flags  # noqa: E402
import example_models  # noqa: E402
import example_training  # noqa: E402
import train_lrpet  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

__all__ = [
    "VARIANTS",
    "StudyConfig",
    "acceptance",
    "file_latency",
    "render",
    "render_run",
    "run",
    "size_plan",
    "smoke_config",
]

NAME = "int8_study"
# Variant -> table label, in table order; the first is the reference of every ratio.
VARIANTS = {
    "dense_float32": "dense, float32",
    "compact_float32": "compact (LRPET, factorized), float32",
    "compact_ptq_int8": "compact, post-training int8",
    "compact_qat_int8": "compact, QAT int8",
}
INT8_VARIANTS = ("compact_ptq_int8", "compact_qat_int8")
SIZE_BAR = 6.0  # the int8 file at least this many times smaller than dense float32
ACCURACY_BAR = 1.0  # and at most this many points less accurate than the dense float model


@dataclasses.dataclass
class StudyConfig:
    """Data, model, training budget, quantization and measurement of the study.

    Attributes:
        dataset, data_dir, train_limit, test_limit: The data
            (`example_data.load_dataset`); the test set is whole by default.
        model, width: The network (`example_models`) and its first-stage
            filters (None: its default).
        epochs, batch_size, recipe: The budget and recipe of both the dense and
            the LRPET training (`example_recipes.RECIPES`).
        schedule, augment: Overrides of the recipe's learning-rate schedule
            and augmentation (None: the recipe's). The defaults, cosine decay
            and no augmentation, are the accuracy study's. A first run with the
            paper's own (step decay, crop + flip) at g=0.7 and 5 epochs left
            the LRPET model at 33% against the dense model's 81%.
        prune_ratio: LRPET's g: every conv keeps r = int(K - K*g).
        ranks: Instead of `prune_ratio`: a dict layer name -> rank (only those
            convs are projected) or a list, one per conv in model order
            (`example_flags.parse_ranks`), e.g. per-layer ranks from
            `benchmarks/rank_allocation.py`. The size plan adds a row for them.
        allocate_images: If > 0, instead of `ranks`: after the dense training,
            `lrpet_tf.allocate_ranks` on the trained dense model, this many
            training images and g's parameter count chooses the LRPET ranks
            (dense -> allocation -> LRPET in one run).
        exclude: Conv layers LRPET leaves dense (`LRPET(exclude=...)`), in
            the training and the size plan alike.
        qat_epochs, qat_learning_rate: The QAT fine-tuning (the `finetune`
            recipe: SGD with momentum, cosine decay from this rate; with
            `augment`'s override, so it sees the images training saw).
        calibration_images: Training images of the post-training int8
            calibration.
        latency_rounds, latency_runs, latency_warmup: Each round times every
            file with `measure_latency(runs=latency_runs, warmup=...)`, in a
            rotating order.
        plan_ratios: Prune ratios of the untrained size plan (empty: none).
        seed: Seed of the weights, data order and calibration sample.
        runs_dir: Folder of the run folders.
        run_name: The run's entry in the study's results (None: `runs_dir`'s
            folder name without `int8_study_`, or `default`).
        output_dir: Folder of the result files (not recorded).
        command: The command line, for the table.
        verbose: Keras fit verbosity.
    """

    dataset: str = "fashion_mnist"
    data_dir: str = None
    train_limit: int = 12_000
    test_limit: int = None
    model: str = "small_cnn"
    width: int = None
    epochs: int = 5
    batch_size: int = 64
    recipe: str = "paper"
    schedule: str = "cosine"
    augment: str = "none"
    prune_ratio: float = 0.65
    ranks: object = None
    allocate_images: int = 0
    exclude: tuple = ()
    qat_epochs: int = 2
    qat_learning_rate: float = 1e-3
    calibration_images: int = 256
    latency_rounds: int = 40
    latency_runs: int = 25
    latency_warmup: int = 5
    plan_ratios: tuple = (0.5, 0.6, 0.65, 0.7, 0.8)
    seed: int = 0
    runs_dir: str = os.path.join("saved_models", NAME)
    run_name: str = None
    output_dir: str = None
    command: str = None
    verbose: int = 2

    def __post_init__(self):
        for name in ("epochs", "qat_epochs", "latency_rounds", "latency_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected `{name}` >= 1. Received: {name}={getattr(self, name)}")
        if self.allocate_images < 0 or (self.allocate_images and self.ranks is not None):
            raise ValueError(
                "Expected `allocate_images` >= 0, and 0 when `ranks` are given. Received: "
                f"allocate_images={self.allocate_images}, ranks={self.ranks!r}"
            )
        if not 0 <= self.prune_ratio < 1:
            raise ValueError(
                f"Expected `prune_ratio` in [0, 1). Received: prune_ratio={self.prune_ratio}"
            )

    def name(self):
        """The run's key in `int8_study.json`."""
        if self.run_name:
            return self.run_name
        folder = os.path.basename(os.path.normpath(self.runs_dir))
        return folder[len(NAME) + 1 :] if folder.startswith(NAME + "_") else "default"

    def train_config(self, method):
        """The `train_lrpet.TrainConfig` of the dense or the LRPET run."""
        return train_lrpet.TrainConfig(
            model=self.model,
            width=self.width,
            dataset=self.dataset,
            data_dir=self.data_dir,
            train_limit=self.train_limit,
            test_limit=self.test_limit,
            method=method,
            prune_ratio=self.prune_ratio,
            ranks=self.ranks,
            exclude=tuple(self.exclude),
            recipe=self.recipe,
            schedule=self.schedule,
            augment=self.augment,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            output_dir=os.path.join(self.runs_dir, method),
            plots=False,
            validate=False,
            verbose=self.verbose,
        )


def smoke_config(output_dir):
    """Synthetic 8x8 images, width 4, one epoch of everything, a few latency rounds.

    The stem stays dense and the LRPET ranks are allocated (`allocate_images`).
    """
    return StudyConfig(
        dataset="synthetic",
        train_limit=None,
        width=4,
        epochs=1,
        prune_ratio=0.5,
        exclude=("stem",),
        allocate_images=64,
        qat_epochs=1,
        calibration_images=32,
        latency_rounds=2,
        latency_runs=3,
        latency_warmup=1,
        plan_ratios=(0.5,),
        runs_dir=os.path.join(output_dir, "runs"),
        run_name="smoke",
        output_dir=output_dir,
        command="int8_study.py --smoke",
        verbose=0,
    )


def size_plan(model_name, input_shape, num_classes, width, ratios, seed=0, exclude=(), ranks=None):
    """.tflite sizes of untrained models: dense float32, and compact int8 per prune ratio.

    The size of an int8 file is set by the architecture and ranks, not by the
    weights' values, so this shows before any training which g meets a size
    target. The compact models are LRPET-projected once at random
    initialisation, factorized, BN-folded and converted with post-training
    int8 calibrated on random inputs (the file is not verified). Their BN
    shifts and means are drawn at random first: at initialisation every
    folded bias is zero, and the converter stores equal constant buffers
    once, which made files 4-5% smaller than trained ones. Layers in
    `exclude` stay dense, as in the study's training. With `ranks` (the
    study's per-layer ranks) a last entry has them instead of a ratio.

    Returns:
        A dict: `dense_float32_bytes` and `compact_int8` (one entry per ratio,
        then one for `ranks`: `prune_ratio` (None for `ranks`), `ranks`,
        `params`, `float32_bytes`, `int8_bytes`, `int8_size_ratio` = dense
        float32 bytes / int8 bytes).
    """
    rng = np.random.default_rng(seed)
    calibration = rng.standard_normal((32, *input_shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        dense = _with_random_shifts(
            example_models.build_model(model_name, input_shape, num_classes, width), rng
        )
        dense_bytes = lrpet_tf.export_tflite(
            lrpet_tf.fold_batchnorm(dense), os.path.join(tmp, "dense.tflite"), verify=False
        ).size_bytes
        entries = []
        choices = [(float(ratio), None) for ratio in ratios]
        if ranks is not None:
            choices.append((None, ranks))
        for ratio, chosen in choices:
            model = _with_random_shifts(
                example_models.build_model(model_name, input_shape, num_classes, width), rng
            )
            lrpet = lrpet_tf.LRPET(
                prune_ratio=ratio,
                ranks=example_config.LRPETSettings(ranks=chosen).rank_argument(model),
                exclude=tuple(exclude) or None,
                verbose=0,
            )
            lrpet.set_model(model)
            lrpet.prepare(model)
            lrpet.project()
            compact = lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=lrpet))
            float_bytes = lrpet_tf.export_tflite(
                compact, os.path.join(tmp, "compact.tflite"), verify=False
            ).size_bytes
            int8_bytes = lrpet_tf.export_tflite(
                compact,
                os.path.join(tmp, "compact_int8.tflite"),
                quantization="int8",
                representative_dataset=calibration,
                verify=False,
            ).size_bytes
            entries.append(
                {
                    "prune_ratio": ratio,
                    "ranks": dict(lrpet.ranks),
                    "params": int(compact.count_params()),
                    "float32_bytes": float_bytes,
                    "int8_bytes": int8_bytes,
                    "int8_size_ratio": dense_bytes / int8_bytes,
                }
            )
    return {"dense_float32_bytes": dense_bytes, "compact_int8": entries}


def _with_random_shifts(model, rng):
    """Gives every BatchNormalization a random beta and moving mean (distinct folded biases)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in (layer.beta, layer.moving_mean):
                variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
    return model


def file_latency(paths, rounds, runs, warmup, num_threads=1):
    """Single-thread latency of several .tflite files, measured side by side.

    `bench_utils.interleaved_latency` with `reload`: each round calls
    `lrpet_tf.measure_latency` once per file (a fresh interpreter: `warmup`
    untimed invokes, then the median of `runs`), in an order rotated every
    round, so the drift of a shared machine's load hits every file alike.

    Args:
        paths: Dict name -> .tflite path; the first is the reference of the
            speedups.
        rounds, runs, warmup, num_threads: As above.

    Returns:
        Dict name -> `median_ms` (median over rounds of the per-round
        medians), `p10_ms`, `p90_ms` (of the per-round medians), `min_ms`,
        `rounds`, `invokes` and `speedup` (`bench_utils.paired_ratio` of the
        reference's per-round median over this file's: median, q25, q75).
    """
    results = bench_utils.interleaved_latency(
        paths, rounds, runs=runs, warmup=warmup, num_threads=num_threads, reload=True
    )
    medians = bench_utils.round_medians(results)
    reference = medians[next(iter(paths))]
    out = {}
    for name, values in medians.items():
        out[name] = {
            "median_ms": float(np.median(values)),
            "p10_ms": float(np.percentile(values, 10)),
            "p90_ms": float(np.percentile(values, 90)),
            "min_ms": float(min(r.min_ms for r in results[name])),
            "rounds": rounds,
            "invokes": rounds * runs,
            "num_threads": num_threads,
            "speedup": bench_utils.paired_ratio(reference, values),
        }
    return out


def acceptance(variants):
    """The issue's bar for each int8 variant: size ratio and accuracy loss vs dense float32."""
    dense = variants["dense_float32"]
    checks = {}
    for name in INT8_VARIANTS:
        entry = variants[name]
        size_ratio = dense["bytes"] / entry["bytes"]
        loss = 100 * (dense["accuracy"] - entry["accuracy"])
        checks[name] = {
            "size_ratio": size_ratio,
            "accuracy_loss_points": loss,
            "size_ok": size_ratio >= SIZE_BAR,
            "accuracy_ok": loss <= ACCURACY_BAR,
            "met": size_ratio >= SIZE_BAR and loss <= ACCURACY_BAR,
        }
    return checks


def run(config=None, smoke=False, output_dir=None):
    """Runs the study; writes and returns the results.

    Args:
        config: A `StudyConfig` (default: the defaults).
        smoke: Run `smoke_config(output_dir)` instead.
        output_dir: For `smoke`: where everything goes.

    Returns:
        The results dict written to `<output_dir>/int8_study.json`.

    Raises:
        RuntimeError: In Keras 3 mode (QAT needs tf_keras), before any work.
    """
    if smoke:
        config = smoke_config(output_dir or os.path.join(tempfile.gettempdir(), f"{NAME}_smoke"))
    config = config or StudyConfig()
    example_export.check_qat_available()
    start = time.perf_counter()
    machine = bench_utils.machine_info()
    seconds = {}

    data = config.train_config("dense").load_data()
    runs = {}
    phase = time.perf_counter()
    runs["dense"] = train_lrpet.run(config.train_config("dense"))
    seconds["train_dense"] = time.perf_counter() - phase
    allocation = None
    if config.allocate_images:
        phase = time.perf_counter()
        images = config.allocate_images
        allocation = rank_allocation.allocate(
            example_training.load_model(os.path.join(runs["dense"]["run_dir"], "trained.keras")),
            data.x_train[:images],
            data.y_train[:images],
            config.prune_ratio,
            config.exclude,
        )
        allocation["images"] = images
        # From here the study runs with these ranks, as if given (`allocation` records how).
        config = dataclasses.replace(config, ranks=allocation["ranks"], allocate_images=0)
        seconds["allocate_ranks"] = time.perf_counter() - phase

    phase = time.perf_counter()
    plan = None
    if config.plan_ratios or config.ranks is not None:
        plan = size_plan(
            config.model,
            data.input_shape,
            data.num_classes,
            config.width,
            config.plan_ratios,
            config.seed,
            config.exclude,
            config.ranks,
        )
    seconds["size_plan"] = time.perf_counter() - phase

    phase = time.perf_counter()
    runs["lrpet"] = train_lrpet.run(config.train_config("lrpet"))
    seconds["train_lrpet"] = time.perf_counter() - phase

    os.makedirs(config.runs_dir, exist_ok=True)
    compact = lrpet_tf.fold_batchnorm(
        example_training.load_model(os.path.join(runs["lrpet"]["run_dir"], "compact.keras"))
    )
    dense = lrpet_tf.fold_batchnorm(
        example_training.load_model(os.path.join(runs["dense"]["run_dir"], "trained.keras"))
    )
    phase = time.perf_counter()
    files = {
        "dense_float32": example_export.export_file(
            dense, os.path.join(config.runs_dir, "dense_float32.tflite"), data=data
        ),
        "compact_float32": example_export.export_file(
            compact, os.path.join(config.runs_dir, "compact_float32.tflite"), data=data
        ),
        "compact_ptq_int8": example_export.export_file(
            compact,
            os.path.join(config.runs_dir, "compact_ptq_int8.tflite"),
            "int8",
            data,
            calibration=example_export.calibration_images(
                data, config.calibration_images, config.seed
            ),
        ),
    }
    seconds["export_float_and_ptq"] = time.perf_counter() - phase

    phase = time.perf_counter()
    qat_model, stage = example_export.quantization_aware_training(
        compact,
        data,
        config.qat_epochs,
        os.path.join(config.runs_dir, "qat"),
        # The fine-tuning recipe with the training's augmentation override.
        recipe=example_config.RecipeSettings(
            recipe="finetune", augment=config.augment
        ).make_recipe(),
        learning_rate=config.qat_learning_rate,
        batch_size=config.batch_size,
        seed=config.seed,
        verbose=config.verbose,
    )
    seconds["qat_finetune"] = time.perf_counter() - phase
    files["compact_qat_int8"] = example_export.export_file(
        qat_model, os.path.join(config.runs_dir, "compact_qat_int8.tflite"), "int8", data
    )

    phase = time.perf_counter()
    keras_accuracy = {
        "dense_float32": runs["dense"]["accuracy"]["trained"],
        "compact_float32": example_training.accuracy(compact, data),
        "compact_qat_int8": example_training.accuracy(qat_model, data),  # fake-quantized
    }
    reports = {"dense_float32": dense, "compact_float32": compact}
    variants = {}
    for name, info in files.items():
        report = lrpet_tf.model_report(reports.get(name, compact))
        variants[name] = {
            **info,
            "label": VARIANTS[name],
            "bytes": os.path.getsize(info["path"]),
            "accuracy": example_training.tflite_accuracy(info["path"], data, limit=None),
            "keras_accuracy": keras_accuracy.get(name),
            "macs": report.total_macs,
            "params": int(reports.get(name, compact).count_params()),
        }
    seconds["accuracy"] = time.perf_counter() - phase

    phase = time.perf_counter()
    latency = file_latency(
        {name: info["path"] for name, info in files.items()},
        config.latency_rounds,
        config.latency_runs,
        config.latency_warmup,
    )
    for name in variants:
        variants[name]["latency"] = latency[name]
    seconds["latency"] = time.perf_counter() - phase
    seconds["total"] = time.perf_counter() - start

    recorded = {k: v for k, v in dataclasses.asdict(config).items() if k != "output_dir"}
    results = {
        "config": recorded,
        "machine": machine,
        "keras": keras.__version__
        if keras.__version__.startswith("3.")
        else f"tf_keras {keras.__version__}",
        "load_average_end": bench_utils.load_average(),
        "dataset": {
            "name": data.name,
            "train": data.num_train,
            "test": data.num_test,
            "input_shape": list(data.input_shape),
        },
        "ranks": runs["lrpet"]["ranks"],
        "allocation": allocation,
        "resumed": {method: runs[method]["resumed"] for method in runs},
        "training_history": {method: _columns(runs[method]["history"]) for method in runs},
        "qat_history": _columns(stage["history"]),
        "variants": variants,
        "acceptance": acceptance(variants),
        "size_plan": plan,
        "seconds": seconds,
    }
    bench_utils.write_run(NAME, config.name(), results, render, config.output_dir)
    print(render_run(bench_utils.portable(results)))
    return results


def _columns(history):
    """Per-epoch logs (a list of dicts) as one list per metric, to 4 significant digits."""
    if isinstance(history, list):
        keys = list(dict.fromkeys(k for epoch in history for k in epoch))
        history = {k: [epoch.get(k) for epoch in history] for k in keys}
    return bench_utils.portable(history, significant=4, decimals=2)


def _budget(results):
    config, dataset = results["config"], results["dataset"]
    return (
        f"`{config['model']}` (width {config['width'] or 'default'}) on {dataset['name']} "
        f"({dataset['train']:,} training images, the whole test set of {dataset['test']:,}); "
        "dense and LRPET ("
        + ("per-layer ranks" if config.get("ranks") is not None else f"g={config['prune_ratio']}")
        + (f", {', '.join(config['exclude'])} left dense" if config.get("exclude") else "")
        + f") trained alike: {config['epochs']} epochs, "
        f"batch {config['batch_size']}, recipe `{config['recipe']}` with schedule "
        f"`{config.get('schedule')}` and augmentation `{config.get('augment')}`, "
        "no per-epoch validation; "
        f"QAT: {config['qat_epochs']} epoch(s) on the same images from learning rate "
        f"{config['qat_learning_rate']:g} (cosine); post-training int8 calibrated on "
        f"{config['calibration_images']} training images."
    )


def _overview(study):
    """One row per run: its settings, accuracies, losses, sizes and speedups."""
    rows = []
    for name, results in study["runs"].items():
        config, variants = results["config"], results["variants"]
        dense = variants["dense_float32"]
        ptq = variants["compact_ptq_int8"]
        rows.append(
            [
                f"`{name}`",
                config["seed"],
                config["epochs"],
                "per-layer" if config.get("ranks") is not None else f"g={config['prune_ratio']}",
                ", ".join(config.get("exclude") or ()) or "-",
                f"{config['qat_learning_rate']:g}",
                *(100 * variants[v]["accuracy"] for v in VARIANTS),
                100 * (dense["accuracy"] - ptq["accuracy"]),
                dense["bytes"] / ptq["bytes"],
                " / ".join(
                    f"{variants[v]['latency']['speedup']['median']:.2f}" for v in list(VARIANTS)[1:]
                ),
            ]
        )
    return bench_utils.markdown_table(
        [
            "run",
            "seed",
            "epochs",
            "ranks",
            "left dense",
            "QAT lr",
            "dense float32 %",
            "compact float32 %",
            "compact PTQ int8 %",
            "compact QAT int8 %",
            "PTQ int8 loss (points)",
            "PTQ int8 smaller",
            "speedup compact / PTQ / QAT",
        ],
        rows,
    )


def render(study):
    """The markdown of the whole study: an overview of every run, then each run's tables."""
    lines = [
        "## Low-rank + int8 for Android (issue 5)",
        "",
        "Every run of `benchmarks/int8_study.py`, in the order they ran (each an entry of "
        "`int8_study.json` under its name); accuracy on the whole test set, speedups vs dense "
        "float32 on 1 XNNPACK thread:",
        "",
        _overview(study),
    ]
    for name, results in study["runs"].items():
        lines += ["", f"### Run `{name}`", "", render_run(results)]
    return "\n".join(lines)


def render_run(results):
    """One run's markdown: command, machine, budget, the table, the bar and the size plan."""
    variants = results["variants"]
    dense = variants["dense_float32"]
    rows = []
    for entry in variants.values():
        rows.append(
            [
                entry["label"],
                100 * entry["accuracy"],
                100 * (entry["accuracy"] - dense["accuracy"]),
                entry["bytes"],
                dense["bytes"] / entry["bytes"],
                entry["params"],
                entry["macs"],
                f"{entry['latency']['median_ms']:.3f}",
                f"{entry['latency']['p10_ms']:.3f}-{entry['latency']['p90_ms']:.3f}",
                entry["latency"]["speedup"]["median"],
                "yes" if entry["verified"] else "NO",
            ]
        )
    table = bench_utils.markdown_table(
        [
            "model",
            f"top-1 % ({results['dataset']['test']:,} test images)",
            "vs dense float (points)",
            ".tflite bytes",
            "smaller than dense float",
            "params",
            "MACs",
            "latency ms (1 thread, median)",
            "p10-p90 of round medians",
            "speedup vs dense float",
            "verified vs Keras",
        ],
        rows,
        digits=2,
    )
    machine = results["machine"]
    seconds = results["seconds"]
    lines = [
        f"Command: `{results['config']['command'] or 'python benchmarks/int8_study.py'}`",
        "",
        bench_utils.machine_markdown(machine) + f" Keras in this run: {results['keras']}.",
        f"Load average (1, 5, 15 min): {machine['load_average']} at the start, "
        f"{results['load_average_end']} at the end (2 cores shared with other jobs). "
        f"Wall time {seconds['total'] / 60:.1f} min (training dense "
        f"{seconds['train_dense'] / 60:.1f}, LRPET {seconds['train_lrpet'] / 60:.1f}, "
        f"QAT {seconds['qat_finetune'] / 60:.1f}).",
        "",
        "Budget: " + _budget(results),
    ]
    resumed = [method for method, flag in results["resumed"].items() if flag]
    if resumed:
        lines.append(f"Reused finished training runs: {', '.join(resumed)}.")
    lines += [
        "",
        table,
        "",
        f"Latency: `lrpet_tf.measure_latency` (LiteRT, XNNPACK, 1 thread, batch 1), the four "
        f"files interleaved over {results['config']['latency_rounds']} rounds of "
        f"{results['config']['latency_runs']} timed invokes each; median over rounds of the "
        "round medians; speedup = median over rounds of the per-round ratio. Accuracy: the "
        ".tflite file in the LiteRT interpreter on every test image.",
        "",
    ]
    for name, check in results["acceptance"].items():
        verdict = "met" if check["met"] else "NOT met"
        lines.append(
            f"- Bar for {variants[name]['label']}: {check['size_ratio']:.2f}x smaller than "
            f"dense float32 (needs >= {SIZE_BAR:g}x: {'ok' if check['size_ok'] else 'no'}), "
            f"{check['accuracy_loss_points']:+.2f} points of accuracy lost vs the dense float "
            f"model (at most {ACCURACY_BAR:g}: {'ok' if check['accuracy_ok'] else 'no'}): "
            f"**{verdict}**."
        )
    ranks = results["ranks"]
    excluded = results["config"].get("exclude") or ()
    lines += [
        "",
        "LRPET ranks: "
        + ", ".join(f"{k} {v}" for k, v in ranks.items())
        + (f"; left dense (`exclude`): {', '.join(excluded)}" if excluded else "")
        + ".",
    ]
    allocation = results.get("allocation")
    if allocation:
        uniform = allocation["uniform_ranks"]
        lines[-1] += (
            f" Chosen by `lrpet_tf.allocate_ranks` on the trained dense model and "
            f"{allocation['images']:,} training images, for the parameters of "
            f"g={results['config']['prune_ratio']} (its ranks: "
            + ", ".join(f"{k} {v}" for k, v in uniform.items())
            + ")."
        )
    plan = results.get("size_plan")
    if plan:
        with_ranks = any(e["prune_ratio"] is None for e in plan["compact_int8"])
        lines += [
            "",
            "Int8 size by prune ratio"
            + (" (and the study's ranks)" if with_ranks else "")
            + ", from untrained models exported "
            "before training (the file size follows the ranks, not the weights' values; dense "
            "float32: "
            f"{plan['dense_float32_bytes']:,} bytes):",
            "",
            bench_utils.markdown_table(
                ["g", "params", "float32 bytes", "int8 bytes", "smaller than dense float"],
                [
                    [
                        "the ranks above" if e["prune_ratio"] is None else e["prune_ratio"],
                        e["params"],
                        e["float32_bytes"],
                        e["int8_bytes"],
                        e["int8_size_ratio"],
                    ]
                    for e in plan["compact_int8"]
                ],
            ),
        ]
    return "\n".join(lines)


def define_flags():
    """The script's flags (defined only when run as a script)."""
    defaults = StudyConfig()
    flags.DEFINE_bool("smoke", False, "Synthetic data, width 4, one epoch: a quick check.")
    flags.DEFINE_string("dataset", defaults.dataset, "Dataset (example_data.DATASETS).")
    flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (default: Debian's).")
    flags.DEFINE_integer("train_limit", defaults.train_limit, "Training images (0: all).")
    flags.DEFINE_integer("test_limit", None, "Test images (default: all).")
    flags.DEFINE_string("model", defaults.model, "Network (example_models.MODELS).")
    flags.DEFINE_integer("width", None, "First-stage filters (default: the model's).")
    flags.DEFINE_integer("epochs", defaults.epochs, "Training epochs of dense and LRPET.")
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Batch size.")
    flags.DEFINE_string("recipe", defaults.recipe, "Training recipe (example_recipes.RECIPES).")
    flags.DEFINE_string("schedule", defaults.schedule, "Learning-rate schedule override.")
    flags.DEFINE_string("augment", defaults.augment, "Augmentation override ('none': none).")
    flags.DEFINE_float("prune_ratio", defaults.prune_ratio, "LRPET's g.")
    flags.DEFINE_string("ranks", None, 'Instead of prune_ratio: "b0_conv1=21,..." or one per conv.')
    flags.DEFINE_integer(
        "allocate_images", 0, "If > 0: LRPET ranks by allocate_ranks on this many images."
    )
    flags.DEFINE_list("exclude", [], "Conv layers LRPET leaves dense, e.g. stem.")
    flags.DEFINE_integer("qat_epochs", defaults.qat_epochs, "QAT fine-tuning epochs.")
    flags.DEFINE_float("qat_learning_rate", defaults.qat_learning_rate, "QAT peak learning rate.")
    flags.DEFINE_integer("latency_rounds", defaults.latency_rounds, "Interleaved latency rounds.")
    flags.DEFINE_integer("latency_runs", defaults.latency_runs, "Timed invokes per round.")
    flags.DEFINE_list("plan_ratios", list(map(str, defaults.plan_ratios)), "Size plan ratios.")
    flags.DEFINE_integer("seed", defaults.seed, "Seed.")
    flags.DEFINE_string("runs_dir", defaults.runs_dir, "Folder of the models and files.")
    flags.DEFINE_string(
        "run_name", None, "The run's name in int8_study.json (default: from runs_dir)."
    )
    flags.DEFINE_string("output_dir", None, "Results folder (default: benchmarks/results).")
    flags.DEFINE_string("render_from", None, "Only rewrite the tables from this results JSON.")
    flags.DEFINE_integer("verbose", defaults.verbose, "Keras fit verbosity.")


def main(argv):
    del argv
    flag_values = flags.FLAGS
    if flag_values.render_from:
        study = bench_utils.read_study(flag_values.render_from, NAME, "default")
        bench_utils.write_results(NAME, study, render(study), flag_values.output_dir, compact=True)
        return
    if flag_values.smoke:
        run(smoke=True, output_dir=flag_values.output_dir)
        return
    config = StudyConfig(
        dataset=flag_values.dataset,
        data_dir=flag_values.data_dir,
        train_limit=flag_values.train_limit or None,
        test_limit=flag_values.test_limit,
        model=flag_values.model,
        width=flag_values.width,
        epochs=flag_values.epochs,
        batch_size=flag_values.batch_size,
        recipe=flag_values.recipe,
        schedule=flag_values.schedule,
        augment=flag_values.augment,
        prune_ratio=flag_values.prune_ratio,
        ranks=example_flags.parse_ranks(flag_values.ranks),
        allocate_images=flag_values.allocate_images,
        exclude=tuple(flag_values.exclude),
        qat_epochs=flag_values.qat_epochs,
        qat_learning_rate=flag_values.qat_learning_rate,
        latency_rounds=flag_values.latency_rounds,
        latency_runs=flag_values.latency_runs,
        plan_ratios=tuple(float(r) for r in flag_values.plan_ratios),
        seed=flag_values.seed,
        runs_dir=flag_values.runs_dir,
        run_name=flag_values.run_name,
        output_dir=flag_values.output_dir,
        command=bench_utils.command_line(drop=("--output_dir",)),
        verbose=flag_values.verbose,
    )
    run(config)


if __name__ == "__main__":
    define_flags()
    app.run(main)

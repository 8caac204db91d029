"""Train a reference model with LRPET, factorize it and export it to TFLite.

Guo et al., "Compact Model Training by Low-Rank Projection with Energy
Transfer", arXiv 2204.05566 (IEEE TNNLS 2024). The model is trained at full
size with `lrpet_tf.LRPET` projecting its convs to rank r; then
`lrpet_tf.factorize` splits them into thin layers, `lrpet_tf.fold_batchnorm`
merges BN and `lrpet_tf.export_tflite` writes verified .tflite files.

    python examples/train_lrpet.py                                  # digits, a few minutes
    python examples/train_lrpet.py --dataset=fashion_mnist --model=resnet20 --epochs=30
    python examples/train_lrpet.py --preset=lrpet_resnet56_cifar10  # a paper row (GPU)
    python examples/train_lrpet.py --method=dense                   # the baseline
    python examples/train_lrpet.py --sweep=0.3,0.5,0.7              # accuracy vs MACs

The run folder (default saved_models/<run name>/) gets trained.keras (the
full-size model after training: dense-projected for LRPET), compact.keras
(factorized, BN not folded, ready to fine-tune), compact_float32.tflite (and
compact_<quantization>.tflite), results.json, report.txt, history.csv and
PNG plots (spectra.png, ranks.png). Run it again with the same folder to
resume an interrupted run (or reuse a finished one).

From Python (benchmarks): `run(TrainConfig(...))` returns the results dict
that results.json holds; `sweep(config, prune_ratios)` runs several.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import example_console  # noqa: E402

if __name__ == "__main__":
    # Before TensorFlow is imported: keeps its C++ start-up lines off the console.
    example_console.quiet_tensorflow_startup()

import example_config  # noqa: E402
import example_export  # noqa: E402
import example_flags  # noqa: E402
import example_models  # noqa: E402
import example_plots  # noqa: E402
import example_reports  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

__all__ = ["METHODS", "TrainConfig", "run", "sweep"]

FLAGS = flags.FLAGS
METHODS = ("lrpet", "dense", "scratch")


@dataclasses.dataclass
class TrainConfig(
    example_config.OutputSettings,
    example_config.LRPETSettings,
    example_config.RecipeSettings,
    example_config.DataSettings,
):
    """Everything a run of train_lrpet depends on (the flags have the same names).

    The data, recipe, LRPET and output fields are `example_config`'s.

    Attributes:
        model, width: Reference model (`example_models.MODELS`) and its
            first-stage filters (None: the paper's).
        method: `"lrpet"` (train with the LRPET callback), `"dense"` (the
            same recipe without it: the baseline) or `"scratch"` (the
            factorized architecture at the same ranks, trained directly from
            the truncated SVD of its random initialisation).
        epochs: Training epochs.
        recalibrate_bn: After training, set every BN's moving statistics to
            their exact values on the training images
            (`lrpet_tf.recalibrate_batchnorm`), before factorizing.
    """

    model: str = "small_cnn"
    width: int = None
    method: str = "lrpet"
    epochs: int = 30
    recalibrate_bn: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Expected `method` in {METHODS}. Received: method={self.method!r}")

    def run_name(self):
        """`<method>_<model>_<dataset>[_g<prune_ratio>][_no-<excluded>]`, the default folder."""
        name = f"{self.method}_{self.model}_{self.dataset}"
        if self.method != "dense":
            name += "_ranks" if self.ranks is not None else f"_g{self.prune_ratio}"
            if self.exclude != "auto":
                name += "".join(f"_no-{layer}" for layer in self.exclude) or "_all-convs"
        return name

    def run_dir(self):
        return self.output_dir or os.path.join("saved_models", self.run_name())


_METHOD_STAGES = {
    "lrpet": "LRPET training",
    "dense": "dense training (the baseline)",
    "scratch": "training the factorized model from scratch",
}
_FIRST_SPECTRA = "first_projection.json"


class _FirstProjectionSpectra(keras.callbacks.Callback):
    """Saves the spectra LRPET's first projection cut (before it), for spectra.png.

    Placed after the `LRPET` callback, it looks after every step and epoch
    whether a projection has run and, the first time, writes the (BN-merged)
    singular values it saw and the ranks it projected to. An existing file
    means the run's first projection happened before a restart: kept as is.
    """

    def __init__(self, lrpet, path):
        super().__init__()
        self.lrpet, self.path = lrpet, path
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _record(self):
        stats = self.lrpet.last_stats
        if stats is None or os.path.exists(self.path):
            return
        example_reports.write_json(
            self.path,
            {
                "epoch": self.epoch + 1,
                "ranks": stats.ranks,
                "singular_values": stats.singular_values,
            },
        )

    def on_train_batch_end(self, batch, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()

    def on_train_end(self, logs=None):
        self._record()


def run(config=None, callbacks=(), **changes):
    """Trains, factorizes and exports one model; returns the results dict.

    Prints a header per stage (training, BN re-estimation if asked,
    export) and, at the end, the report and the time per stage.

    Args:
        config: A `TrainConfig` (default: the defaults).
        callbacks: Extra Keras callbacks, run after each epoch's backup
            (e.g. one that stops the run).
        **changes: Fields of `config` to change.

    Returns:
        The dict written to `<run_dir>/results.json` (see
        `example_reports`), with the run folder under `run_dir`.
    """
    config = dataclasses.replace(config or TrainConfig(), **changes)
    start = time.perf_counter()
    run_dir, data, strategy = example_reports.start_run(config)
    trained_path = os.path.join(run_dir, "trained.keras")
    stages = example_console.Stages(3 if config.recalibrate_bn else 2)

    with strategy.scope():
        dense = example_models.build_model(
            config.model, data.input_shape, data.num_classes, config.width
        )
    lrpet = None
    if config.method != "dense":
        lrpet = config.make_lrpet(dense, config.log_dir, verbose=1 if config.verbose else 0)
    ranks = None
    if lrpet is not None:
        lrpet.prepare(dense)
        ranks = dict(lrpet.ranks)

    resumed = os.path.exists(trained_path)
    if resumed:
        stages.skip(_METHOD_STAGES[config.method], f"{trained_path} exists, reusing it")
        model = example_training.load_model(trained_path, strategy)
        stage = {
            "history": example_training.read_history(os.path.join(run_dir, "history.csv")),
            "epochs_run": 0,
        }
    else:
        if config.method == "scratch":
            with strategy.scope():
                model = lrpet_tf.factorize(dense, ranks=ranks)
        else:
            model = dense
        stage_callbacks = []
        if config.method == "lrpet":
            first = _FirstProjectionSpectra(lrpet, os.path.join(run_dir, _FIRST_SPECTRA))
            stage_callbacks = [lrpet, first]
        with stages.stage(
            _METHOD_STAGES[config.method],
            example_training.epochs_detail(config.epochs, run_dir),
        ):
            stage = example_training.fit_stage(
                model,
                data,
                config.make_recipe(),
                config.epochs,
                config.batch_size,
                run_dir,
                trained_path,
                strategy=strategy,
                callbacks=stage_callbacks,
                extra_callbacks=callbacks,
                log_dir=config.log_dir,
                seed=config.seed,
                verbose=config.verbose,
                validate=config.validate,
            )
    stage["seconds"] = sum(row.get("epoch_seconds", 0.0) for row in stage["history"])
    if config.method == "lrpet":
        lrpet.prepare(model)
    recalibration = None
    if config.recalibrate_bn:
        with stages.stage("BN statistics re-estimated on the training images"):
            # As training fed them, augmentation included: the later layers were
            # trained on what BN made of augmented batches.
            augment = config.make_recipe().augmentation(data.name)
            train_images = data.train_dataset(config.batch_size, augment, seed=config.seed)
            recalibration = lrpet_tf.recalibrate_batchnorm(model, train_images)
    train_seconds = time.perf_counter() - start

    export_start = time.perf_counter()
    quantizations = ("float32", *config.quantization)
    with stages.stage(*example_console.export_stage(config.method, quantizations)):
        factor_report = None
        if config.method == "lrpet":
            compact, factor_report = lrpet_tf.factorize(model, ranks=lrpet, return_report=True)
        else:
            compact = model  # dense: nothing to factorize; scratch: already compact
        compact_path = os.path.join(run_dir, "compact.keras")
        example_training.save_model(compact, compact_path, strategy)
        folded, files, tflite_accuracies = example_export.export_compact(
            compact, data, run_dir, config.quantization
        )
        accuracy = {
            "trained": example_training.accuracy(model, data),
            "compact": example_training.accuracy(folded, data),
            **tflite_accuracies,
        }
        if compact is not model:
            accuracy["compact_keras"] = example_training.accuracy(compact, data)
        costs = example_reports.run_costs(dense, model, trained_path, compact, compact_path, folded)
    results = {
        "script": "train_lrpet",
        "method": config.method,
        "trained_label": {
            "lrpet": "trained.keras (dense-projected)",
            "dense": "trained.keras (dense)",
        }.get(config.method, "trained.keras (compact)"),
        # dense and scratch: compact.keras is the trained model itself.
        "compact_label": "compact.keras (factorized)" if compact is not model else None,
        "run_dir": run_dir,
        "config": dataclasses.asdict(config),
        "dataset": data.info(),
        "accuracy": accuracy,
        "costs": costs,
        **example_reports.compression_ratios(costs),
        "ranks": ranks or {},
        "layers": example_reports.layer_rows(dense if config.method == "scratch" else model, ranks),
        "tflite": files,
        "resumed": resumed,
        "epochs_run": stage["epochs_run"],
        "history": stage["history"],
        "projections": None if lrpet is None else lrpet.projection_count,
        "recalibration": recalibration,
    }
    results["seconds"] = {
        "train": stage["seconds"],
        "export": time.perf_counter() - export_start,
        "total": time.perf_counter() - start,
        "this_process_training": train_seconds,
    }
    if config.plots:
        results["plots"] = _plots(config, results, model, lrpet, run_dir)
    return example_reports.finish_run(run_dir, results, stages, [factor_report])


def _plots(config, results, model, lrpet, run_dir):
    what = f"{config.model} on {config.dataset}, {config.method}"
    if config.method != "dense":
        what += f", g={config.prune_ratio}" if config.ranks is None else ", given ranks"
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if config.method == "dense":
        break_even = {row["name"]: row["break_even"] for row in results["layers"]}
        columns = [
            example_plots.spectra_column(
                "trained kernels",
                example_plots.kernel_spectra(model, convs),
                {name: int(value) for name, value in break_even.items()},
                "break-even rank (factorizing pays below it)",
            )
        ]
        title = f"Singular values per conv layer; {what}"
    else:
        # LRPET's statistics are of the kernels with the next BN merged in.
        kernels = "BN-merged kernels" if config.bn_rectification else "kernels"
        columns = []
        first_path = os.path.join(run_dir, _FIRST_SPECTRA)
        if os.path.exists(first_path):
            with open(first_path) as f:
                first = json.load(f)
            columns.append(
                example_plots.spectra_column(
                    f"{kernels} before the first projection (end of epoch {first['epoch']})",
                    first["singular_values"],
                    first["ranks"],
                    "rank projected to",
                )
            )
        stats = lrpet.last_stats if lrpet is not None else None
        if stats is not None and stats.singular_values:
            columns.append(
                example_plots.spectra_column(
                    f"{kernels} at the end of training, before the last projection",
                    dict(stats.singular_values),
                    results["ranks"],
                )
            )
        else:  # a reused run (or scratch): the kernels as trained
            columns.append(
                example_plots.spectra_column(
                    "trained kernels", example_plots.kernel_spectra(model, convs), results["ranks"]
                )
            )
        title = f"Singular values per conv layer; {what}"
    return {
        "spectra": example_plots.plot_spectra(columns, os.path.join(run_dir, "spectra.png"), title),
        "ranks": example_plots.plot_ranks(
            results["layers"],
            os.path.join(run_dir, "ranks.png"),
            f"Rank per layer: {what}",
        ),
    }


def sweep(config=None, prune_ratios=(0.3, 0.5, 0.7), include_dense=True, callbacks=()):
    """Trains at several prune ratios (and the dense baseline) and plots accuracy vs MACs.

    Each run gets its own folder `<output_dir>/g<ratio>` (and `dense`), so an
    interrupted sweep resumes run by run.

    Returns:
        A dict with `runs` (one results dict per run), `points` and `plot`
        (the PNG path); also written to `<output_dir>/sweep.json`.
    """
    config = config or TrainConfig()
    base = config.output_dir or os.path.join(
        "saved_models", f"sweep_{config.model}_{config.dataset}"
    )
    runs = []
    baseline = None
    count = len(prune_ratios) + bool(include_dense)
    if include_dense:
        print(f"\nrun 1/{count} of the sweep: the dense baseline", flush=True)
        dense = run(
            dataclasses.replace(config, method="dense", output_dir=os.path.join(base, "dense")),
            callbacks=callbacks,
        )
        runs.append(dense)
        baseline = {
            "macs": dense["costs"]["compact"]["macs"],
            "accuracy": dense["accuracy"]["compact"],
        }
    points = []
    for ratio in prune_ratios:
        print(f"\nrun {len(runs) + 1}/{count} of the sweep: LRPET at g={ratio}", flush=True)
        result = run(
            dataclasses.replace(
                config,
                method="lrpet",
                prune_ratio=float(ratio),
                ranks=None,
                output_dir=os.path.join(base, f"g{ratio}"),
            ),
            callbacks=callbacks,
        )
        runs.append(result)
        points.append(
            {
                "label": f"g={ratio}",
                "prune_ratio": float(ratio),
                "macs": result["costs"]["compact"]["macs"],
                "accuracy": result["accuracy"]["compact"],
                "tflite_accuracy": result["accuracy"].get("tflite_float32"),
            }
        )
    plot = example_plots.plot_sweep(
        points,
        os.path.join(base, "accuracy_vs_macs.png"),
        f"LRPET sweep: {config.model} on {config.dataset}, {config.epochs} epochs",
        baseline=baseline,
    )
    summary = {"runs": runs, "points": points, "baseline": baseline, "plot": plot}
    example_reports.write_json(os.path.join(base, "sweep.json"), summary)
    print(
        example_reports.format_table(
            ["run", "MACs", "accuracy %"],
            ([["dense", baseline["macs"], 100 * baseline["accuracy"]]] if baseline else [])
            + [[p["label"], p["macs"], 100 * p["accuracy"]] for p in points],
            title=f"Sweep written to {base}",
        )
    )
    return summary


def define_flags():
    """The script's flags (defined only when run as a script)."""
    example_console.define_flags()
    flags.declare_key_flag("tf_logs")  # listed in this script's --help
    example_flags.define_data_flags()
    example_flags.define_recipe_flags()
    example_flags.define_lrpet_flags()
    example_flags.define_output_flags()
    flags.DEFINE_enum(
        "preset",
        None,
        [
            p.name
            for p in example_flags.example_presets.PRESETS.values()
            if p.script == "train_lrpet"
        ],
        "The paper's setting for a table row (flags given override it).",
    )
    flags.DEFINE_list("sweep", None, "Prune ratios to sweep (plus the dense baseline).")
    flags.DEFINE_bool(
        "recalibrate_bn",
        False,
        "Re-estimate BN statistics on the (augmented) training images after training.",
    )


def main(argv):
    del argv
    config = example_flags.config_from_flags(TrainConfig, "train_lrpet")
    if FLAGS.sweep:
        sweep(config, [float(r) for r in FLAGS.sweep])
    else:
        run(config)


if __name__ == "__main__":
    define_flags()
    app.run(main)

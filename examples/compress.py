"""Compress a model you already trained: LRPET or SVD fine-tuning, then TFLite.

Takes a trained dense `.keras` model (any Functional/Sequential model with
convs) and, for a few epochs on its dataset, either

* `--method=svd` (the default): truncates each conv to rank r by SVD and
  factorizes at once (train-then-compress), then fine-tunes the compact
  model; or
* `--method=lrpet`: fine-tunes it with the LRPET callback (projection with
  energy transfer and BN rectification each epoch), then factorizes.

`svd` is the default because it was the more accurate of the two in the
accuracy study's scenario B (benchmarks/RESULTS.md section 1: ResNet-20 on
Fashion-MNIST, 15 epochs from the converged model, 3 seeds): 90.73% against
LRPET's 90.60% at 1.78x fewer MACs, 90.15% against 88.58% at 3.55x.

to a prune ratio g (each conv keeps r = int(K - K*g)), given ranks, or the
smallest g whose compact model has at most `--macs_target` of the original
MACs. Then BN is folded and verified .tflite files are exported.

    python examples/train_lrpet.py --method=dense --output_dir=saved_models/dense_digits
    python examples/compress.py --model_path=saved_models/dense_digits/trained.keras \\
        --macs_target=0.5 --epochs=5

The data must be prepared as for training (same dataset, `--standardize`).
The run folder (default saved_models/compress_<model file>_<method>/) gets
trained.keras (LRPET: the projected model; SVD: the fine-tuned compact
model), compact.keras, compact_float32.tflite, results.json, report.txt and
plots, as train_lrpet.py; an interrupted fine-tuning resumes.

From Python: `run(CompressConfig(model_path=...))`. `--macs_target` picks g
with `lrpet_tf.prune_ratio_for_macs`.
"""

import dataclasses
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
import example_plots  # noqa: E402
import example_reports  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

__all__ = ["CompressConfig", "run"]

FLAGS = flags.FLAGS
METHODS = ("svd", "lrpet")


@dataclasses.dataclass
class CompressConfig(
    example_config.OutputSettings,
    example_config.LRPETSettings,
    example_config.RecipeSettings,
    example_config.DataSettings,
):
    """Everything a run of compress depends on (the flags have the same names).

    The data, recipe, LRPET and output fields are `example_config`'s
    (`prune_ratio` 0.5 and recipe `"finetune"`, SGD 0.01, cosine, L2 1e-4, by
    default here).

    Attributes:
        model_path: The trained dense `.keras` model.
        method: `"svd"` (the default) or `"lrpet"` (see the module docstring).
        macs_target: If given, the fraction of the model's MACs the compact
            model may keep (e.g. 0.5); the prune ratio is chosen for it.
        latency_budget: If given, the fraction of the dense model's measured
            LiteRT latency (one XNNPACK thread) the compact model may take:
            `lrpet_tf.latency_table` times the layers on this machine and
            `allocate_ranks(cost="latency")` picks the per-layer ranks on
            3,000 training images; layers whose factorized pair is not
            faster stay dense.
        epochs: Fine-tuning epochs.
    """

    model_path: str = None
    method: str = "svd"
    prune_ratio: float = 0.5
    macs_target: float = None
    latency_budget: float = None
    recipe: object = "finetune"
    epochs: int = 5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Expected `method` in {METHODS}. Received: method={self.method!r}")
        if not self.model_path:
            raise ValueError("`model_path` (a trained .keras model) is required.")

    def run_dir(self):
        stem = os.path.splitext(os.path.basename(self.model_path))[0]
        parent = os.path.basename(os.path.dirname(os.path.abspath(self.model_path)))
        return self.output_dir or os.path.join(
            "saved_models", f"compress_{parent}_{stem}_{self.method}"
        )


def _conv_ranks(model, prune_ratio=None, ranks=None, exclude=None):
    """Layer name -> rank of the convs LRPET projects, for a prune ratio or ranks."""
    callback = lrpet_tf.LRPET(prune_ratio=prune_ratio, ranks=ranks, exclude=exclude, verbose=0)
    callback.prepare(model)
    return dict(callback.ranks)


def run(config=None, callbacks=(), **changes):
    """Compresses `config.model_path`, fine-tunes, factorizes and exports.

    Prints a header per stage (ranks and truncation, fine-tuning, export)
    and, at the end, the report and the time per stage.

    Returns:
        The dict written to `<run_dir>/results.json`; `accuracy` holds
        `original` (the model given, also as `trained`: the report's first
        row), `truncated` (its rank-r SVD truncation without fine-tuning),
        `finetuned` (trained.keras), `compact_keras` (compact.keras) and
        `compact` (BN folded, as in the .tflite files).
    """
    if config is None:
        config = CompressConfig(model_path=changes.pop("model_path", None))
    config = dataclasses.replace(config, **changes)
    start = time.perf_counter()
    run_dir, data, strategy = example_reports.start_run(config)
    original = example_training.load_model(config.model_path, strategy)

    stages = example_console.Stages(3)
    fine_tuning = (
        "LRPET fine-tuning" if config.method == "lrpet" else "fine-tuning the truncated model"
    )
    given = config.rank_argument(original)
    if given is not None:
        plan = "given ranks"
    elif config.macs_target:
        plan = f"smallest prune ratio keeping at most {config.macs_target:g} of the MACs"
    elif config.latency_budget:
        plan = f"per-layer ranks for {config.latency_budget:g}x the measured latency"
    else:
        plan = f"prune ratio {config.prune_ratio:g}"
    with stages.stage("ranks and truncated SVD", plan):
        exclude = config.excluded_layers(original) or None
        prune_ratio, macs_fraction = config.prune_ratio, None
        total_macs = lrpet_tf.model_report(original).total_macs
        if config.macs_target:
            budget = int(config.macs_target * total_macs)
            prune_ratio = lrpet_tf.prune_ratio_for_macs(original, budget, exclude=exclude)
        ranks = _conv_ranks(
            original,
            prune_ratio=None if given is not None else prune_ratio,
            ranks=given,
            exclude=exclude,
        )
        table = None
        if config.latency_budget:
            table = lrpet_tf.latency_table(original, ranks=ranks, verbose=True)
            rest = table.model_ms - sum(table.dense_ms(n) for n in ranks)
            ranks = lrpet_tf.allocate_ranks(
                original,
                data.x_train[:3000],
                data.y_train[:3000],
                ranks,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                cost="latency",
                latency_table=table,
                budget=config.latency_budget * table.model_ms - rest,
            )
        with strategy.scope():
            truncated = lrpet_tf.factorize(original, ranks=ranks, latency_table=table)
        if config.macs_target:
            macs_fraction = lrpet_tf.model_report(truncated).total_macs / total_macs
        truncated_accuracy = example_training.accuracy(truncated, data)  # before fine-tuning
    trained_path = os.path.join(run_dir, "trained.keras")
    resumed = os.path.exists(trained_path)
    lrpet = None
    if resumed:
        stages.skip(fine_tuning, f"{trained_path} exists, reusing it")
        model = example_training.load_model(trained_path, strategy)
        history = example_training.read_history(os.path.join(run_dir, "history.csv"))
        epochs_run = 0
    else:
        if config.method == "lrpet":
            model = example_training.load_model(config.model_path, strategy)
            lrpet = lrpet_tf.LRPET(
                ranks=ranks,
                frequency=config.frequency,
                energy_transfer=config.energy_transfer,
                bn_rectification=config.bn_rectification,
                warmup_epochs=config.warmup_epochs,
                log_dir=config.log_dir,
                verbose=1 if config.verbose else 0,
            )
        else:
            model = truncated
        with stages.stage(fine_tuning, example_training.epochs_detail(config.epochs, run_dir)):
            stage = example_training.fit_stage(
                model,
                data,
                config.make_recipe(),
                config.epochs,
                config.batch_size,
                run_dir,
                trained_path,
                strategy=strategy,
                callbacks=[lrpet] if lrpet is not None else [],
                extra_callbacks=callbacks,
                log_dir=config.log_dir,
                seed=config.seed,
                verbose=config.verbose,
                validate=config.validate,
            )
        history, epochs_run = stage["history"], stage["epochs_run"]

    export_start = time.perf_counter()
    quantizations = ("float32", *config.quantization)
    with stages.stage(*example_console.export_stage(config.method, quantizations)):
        factor_report = None
        if config.method == "lrpet":
            with strategy.scope():
                compact, factor_report = lrpet_tf.factorize(
                    model, ranks=ranks, return_report=True, latency_table=table
                )
        else:
            compact = model
        compact_path = os.path.join(run_dir, "compact.keras")
        example_training.save_model(compact, compact_path, strategy)
        folded, files, tflite_accuracies = example_export.export_compact(
            compact, data, run_dir, config.quantization
        )
        original_accuracy = example_training.accuracy(original, data)
        accuracy = {
            "original": original_accuracy,
            # The summary table compares the model given with the compact one.
            "trained": original_accuracy,
            "truncated": truncated_accuracy,
            "finetuned": example_training.accuracy(model, data),
            "compact_keras": example_training.accuracy(compact, data),
            "compact": example_training.accuracy(folded, data),
            **tflite_accuracies,
        }
        # "trained" is the model given (the table's first row).
        costs = example_reports.run_costs(
            original, original, config.model_path, compact, compact_path, folded
        )
        costs["finetuned"] = example_reports.cost_row(model, trained_path)
    results = {
        "script": "compress",
        "method": config.method,
        "trained_label": f"{os.path.basename(config.model_path)} (given)",
        "compact_label": "compact.keras (factorized, fine-tuned)",
        "reference_label": "the model given",
        "run_dir": run_dir,
        "config": dataclasses.asdict(config),
        "dataset": data.info(),
        "prune_ratio": None if given is not None else prune_ratio,
        "macs_fraction_planned": macs_fraction,
        "accuracy": accuracy,
        "costs": costs,
        **example_reports.compression_ratios(costs),
        "ranks": ranks,
        "layers": example_reports.layer_rows(
            model if config.method == "lrpet" else original, ranks
        ),
        "tflite": files,
        "resumed": resumed,
        "epochs_run": epochs_run,
        "history": history,
    }
    results["seconds"] = {
        "train": float(sum(row.get("epoch_seconds", 0.0) for row in history)),
        "export": time.perf_counter() - export_start,
        "total": time.perf_counter() - start,
    }
    if config.plots:
        results["plots"] = _plots(config, results, original, lrpet, run_dir)
    return example_reports.finish_run(run_dir, results, stages, [factor_report])


def _plots(config, results, original, lrpet, run_dir):
    what = f"{os.path.basename(config.model_path)} compressed by {config.method}"
    ranks = results["ranks"]
    columns = [
        example_plots.spectra_column(
            "original kernels (the model given)",
            example_plots.kernel_spectra(original, list(ranks)),
            ranks,
        )
    ]
    stats = lrpet.last_stats if lrpet is not None else None
    if stats is not None and stats.singular_values:
        kernels = "BN-merged kernels" if config.bn_rectification else "kernels"
        columns.append(
            example_plots.spectra_column(
                f"{kernels} at the end of fine-tuning, before the last projection",
                dict(stats.singular_values),
                ranks,
            )
        )
    return {
        "ranks": example_plots.plot_ranks(
            results["layers"], os.path.join(run_dir, "ranks.png"), f"Rank per layer: {what}"
        ),
        "spectra": example_plots.plot_spectra(
            columns,
            os.path.join(run_dir, "spectra.png"),
            f"Singular values per conv layer; {what}",
        ),
    }


def define_flags():
    """The script's flags (defined only when run as a script)."""
    example_console.define_flags()
    flags.declare_key_flag("tf_logs")  # listed in this script's --help
    flags.DEFINE_string("model_path", None, "The trained dense .keras model.", required=True)
    flags.DEFINE_enum("method", "svd", METHODS, "SVD + fine-tuning, or LRPET fine-tuning.")
    example_flags.define_data_flags(model_flags=False)
    example_flags.define_recipe_flags(default_epochs=5, default_recipe="finetune")
    example_flags.define_output_flags()
    flags.DEFINE_float("prune_ratio", 0.5, "g: each conv keeps r = int(K - K*g).")
    flags.DEFINE_string("ranks", None, 'Instead: "8", "18,43*12" (per conv) or "conv1=4,..."')
    flags.DEFINE_float("macs_target", None, "Instead: keep at most this fraction of the MACs.")
    flags.DEFINE_float(
        "latency_budget",
        None,
        "Instead: at most this fraction of the dense model's measured latency (per-layer ranks).",
    )
    flags.DEFINE_string("frequency", "epoch", '"epoch" or a step count (LRPET).')
    flags.DEFINE_enum(
        "energy_transfer", "scale", ("scale", "additive", "none"), "LRPET energy transfer."
    )
    flags.DEFINE_bool("bn_rectification", True, "LRPET: project the BN-merged kernels.")
    flags.DEFINE_integer("warmup_epochs", 0, "LRPET: epochs before the first projection.")


def main(argv):
    del argv
    run(example_flags.config_from_flags(CompressConfig, "compress"))


if __name__ == "__main__":
    define_flags()
    app.run(main)

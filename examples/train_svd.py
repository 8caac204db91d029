"""SVD training in four resumable stages, then factorize and export to TFLite.

Yang, Tang, Wen, Yan, Hu, Li, Li, Chen, "Learning Low-rank Deep Neural
Networks via Singular Vector Orthogonality Regularization and Singular Value
Sparsification", CVPR Workshops 2020 (arXiv 2004.09031):

1. decomposed training: every conv in SVD form (`lrpet_tf.svd_training.
   decompose`), trained with the orthogonality penalty only;
2. sparsity training: the same model with the sparsity penalty on s added
   (`set_regularization(sparsity_weight=...)`);
3. pruning: per layer, drop the smallest singular values holding a fraction
   `energy` of its energy (`svd_training.prune`);
4. fine-tuning: the pruned model, sparsity off, orthogonality on.

Then `lrpet_tf.factorize` turns the SVD layers into standard thin layers, BN
is folded and .tflite files are exported and verified.

    python examples/train_svd.py                                # digits, a few minutes
    python examples/train_svd.py --preset=svd_resnet20_cifar10  # the paper's setting (GPU)

Each stage saves `<run_dir>/stageN_<name>.keras` when it finishes, and a run
restarted with the same folder skips finished stages and resumes the stage it
was in (`keras.callbacks.BackupAndRestore` in `<run_dir>/stageN_<name>/`).
The SVD metrics `svd_orthogonality`, `svd_sparsity` and `svd_rank` are in
each stage's history.csv and, with `--log_dir`, in TensorBoard.

From Python (benchmarks): `run(SVDConfig(...))` returns the results dict.
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
import example_models  # noqa: E402
import example_plots  # noqa: E402
import example_reports  # noqa: E402
import example_training  # noqa: E402
import numpy as np  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402

__all__ = ["STAGES", "SVDConfig", "run"]

FLAGS = flags.FLAGS
STAGES = ("decomposed", "sparsity", "pruned", "finetune")


@dataclasses.dataclass
class SVDConfig(
    example_config.OutputSettings,
    example_config.RecipeSettings,
    example_config.DataSettings,
):
    """Everything a run of train_svd depends on (the flags have the same names).

    The data, recipe and output fields are `example_config`'s; the recipe
    (default `"svd_paper"`: Adam 1e-3, no weight decay, as the released code)
    is every stage's.

    Attributes:
        model, width: As `train_lrpet.TrainConfig`.
        scheme: `"channel"` or `"spatial"` decomposition.
        init: `"random"` (the released code, training from scratch) or
            `"svd"` (from the SVD of the freshly built dense kernels).
        orthogonality: lambda_o (1.0 on CIFAR in the paper).
        sparsity: `"l1"`, `"hoyer"` or `"hoyer_square"`.
        sparsity_weight: lambda_s of stage 2.
        energy: e, the fraction of each layer's energy pruning removes.
        macs_target: Instead of `energy`: prune with the smallest e whose
            compact model keeps at most this fraction of the dense model's
            MACs (to compare with other methods at equal compression).
        decomposed_epochs, sparsity_epochs, finetune_epochs: Stage lengths.
        finetune_learning_rate: Stage 4's initial learning rate (default:
            the recipe's).
    """

    model: str = "small_cnn"
    width: int = None
    scheme: str = "channel"
    init: str = "random"
    orthogonality: float = 1.0
    sparsity: str = "hoyer"
    sparsity_weight: float = 0.01
    energy: float = 0.05
    macs_target: float = None
    decomposed_epochs: int = 10
    sparsity_epochs: int = 10
    finetune_epochs: int = 5
    recipe: object = "svd_paper"
    finetune_learning_rate: float = None

    def run_name(self):
        return f"svd_{self.model}_{self.dataset}_{self.sparsity}_e{self.energy}"

    def run_dir(self):
        return self.output_dir or os.path.join("saved_models", self.run_name())


def stage_path(run_dir, index):
    """The model file that marks stage `index` (0-based) as finished."""
    return os.path.join(run_dir, f"stage{index + 1}_{STAGES[index]}.keras")


def _svd_spectra(model):
    """Layer name -> |s| (descending) of each SVD-form layer."""
    return {
        layer.name: np.sort(np.abs(layer.s.numpy()))[::-1]
        for layer in model.layers
        if isinstance(layer, svd_training.SVDLayer)
    }


def run(config=None, callbacks=(), **changes):
    """Runs the four stages (skipping finished ones), factorizes and exports.

    Prints a header per stage ("stage 2/5: sparsity training, 10 epochs";
    the fifth is the export) and, at the end, the report and the time per
    stage.

    Args:
        config: An `SVDConfig` (default: the defaults).
        callbacks: Extra Keras callbacks for the training stages, run after
            each epoch's backup.
        **changes: Fields of `config` to change.

    Returns:
        The dict written to `<run_dir>/results.json`; `stages` says, per
        stage, whether it was `"run"` or `"skipped"` (finished before) and
        how many epochs this call ran; `stage_times` holds the printed
        headers' rows (number, name, status, seconds).
    """
    config = dataclasses.replace(config or SVDConfig(), **changes)
    start = time.perf_counter()
    run_dir, data, strategy = example_reports.start_run(config)
    recipe = config.make_recipe()
    with strategy.scope():
        dense = example_models.build_model(
            config.model, data.input_shape, data.num_classes, config.width
        )
    stages, history = {}, []
    headers = example_console.Stages(len(STAGES) + 1)
    names = {
        "decomposed": "decomposed training",
        "sparsity": "sparsity training",
        "pruned": "pruning",
        "finetune": "fine-tuning",
    }

    def train(model, index, epochs, stage_recipe):
        path = stage_path(run_dir, index)
        stage_dir = os.path.join(run_dir, f"stage{index + 1}_{STAGES[index]}")
        with headers.stage(names[STAGES[index]], example_training.epochs_detail(epochs, stage_dir)):
            result = example_training.fit_stage(
                model,
                data,
                stage_recipe,
                epochs,
                config.batch_size,
                stage_dir,
                path,
                strategy=strategy,
                extra_callbacks=callbacks,
                log_dir=os.path.join(config.log_dir, STAGES[index]) if config.log_dir else None,
                seed=config.seed + index,
                verbose=config.verbose,
                validate=config.validate,
            )
        stages[STAGES[index]] = {"status": "run", "epochs_run": result["epochs_run"]}
        return model

    def load(index, energy=config.energy):
        path = stage_path(run_dir, index)
        headers.skip(names[STAGES[index]], f"done before ({os.path.basename(path)})")
        stages[STAGES[index]] = {"status": "skipped", "epochs_run": 0}
        model = example_training.load_model(path, strategy)
        return svd_training.attach_svd_metrics(model, energy=energy)

    # 1. Decomposed training: orthogonality only.
    if os.path.exists(stage_path(run_dir, 0)):
        model = load(0)
    else:
        with strategy.scope():
            model = svd_training.decompose(
                dense,
                scheme=config.scheme,
                orthogonality=config.orthogonality,
                sparsity=config.sparsity,
                sparsity_weight=0.0,
                init=config.init,
                rank_energy=config.energy,
            )
        train(model, 0, config.decomposed_epochs, recipe)
    stage1_spectra = _svd_spectra(model)
    # 2. Sparsity training.
    if os.path.exists(stage_path(run_dir, 1)):
        model = load(1)
    else:
        svd_training.set_regularization(model, sparsity_weight=config.sparsity_weight)
        train(model, 1, config.sparsity_epochs, recipe)
    decomposed = model
    spectra = _svd_spectra(decomposed)
    # 3. Pruning at energy e (the report is recomputed when the stage is skipped).
    pruning = (
        f"to {config.macs_target:g} of the dense MACs"
        if config.macs_target
        else f"at energy {config.energy:g}"
    )
    pruned_path = stage_path(run_dir, 2)
    done_before = os.path.exists(pruned_path)
    if done_before:
        pruning += f"; the pruned model is {os.path.basename(pruned_path)}, done before"
    with headers.stage(f"{names['pruned']} {pruning}") as row:
        decomposed_accuracy = example_training.accuracy(decomposed, data)
        energy = config.energy
        if config.macs_target:
            dense_macs = lrpet_tf.model_report(dense).total_macs
            energy = svd_training.energy_for_macs(decomposed, int(config.macs_target * dense_macs))
        with strategy.scope():
            pruned, prune_report = svd_training.prune(decomposed, energy=energy, return_report=True)
        # prune() attaches svd_rank at energy 0.01; count it at the pruning energy.
        svd_training.attach_svd_metrics(pruned, energy=energy)
        if done_before:
            row["status"] = "reused"
            stages[STAGES[2]] = {"status": "skipped", "epochs_run": 0}
            pruned = svd_training.attach_svd_metrics(
                example_training.load_model(pruned_path, strategy), energy=energy
            )
        else:
            example_training.save_model(pruned, pruned_path, strategy)
            stages[STAGES[2]] = {"status": "run", "epochs_run": 0}
        pruned_accuracy = example_training.accuracy(pruned, data)
    # 4. Fine-tuning: sparsity off, orthogonality on.
    if os.path.exists(stage_path(run_dir, 3)):
        model = load(3, energy)
    else:
        model = pruned
        svd_training.set_regularization(model, sparsity_weight=0.0)
        finetune_recipe = recipe.replace(learning_rate=config.finetune_learning_rate)
        train(model, 3, config.finetune_epochs, finetune_recipe)
    for index in (0, 1, 3):
        stage_dir = os.path.join(run_dir, f"stage{index + 1}_{STAGES[index]}")
        for row in example_training.read_history(os.path.join(stage_dir, "history.csv")):
            history.append({"stage": STAGES[index], **row})
    train_seconds = sum(row.get("epoch_seconds", 0.0) for row in history)

    export_start = time.perf_counter()
    quantizations = ("float32", *config.quantization)
    with headers.stage(
        "factorize, fold BN, export and evaluate",
        example_console.plural(len(quantizations), ".tflite file")
        + f" ({', '.join(quantizations)})",
    ):
        with strategy.scope():
            compact, factor_report = lrpet_tf.factorize(model, return_report=True)
        compact_path = os.path.join(run_dir, "compact.keras")
        example_training.save_model(compact, compact_path, strategy)
        folded, files, tflite_accuracies = example_export.export_compact(
            compact, data, run_dir, config.quantization
        )
        accuracy = {
            "decomposed": decomposed_accuracy,
            "pruned": pruned_accuracy,
            "trained": example_training.accuracy(model, data),
            "compact_keras": example_training.accuracy(compact, data),
            "compact": example_training.accuracy(folded, data),
            **tflite_accuracies,
        }
        costs = example_reports.run_costs(
            dense, model, stage_path(run_dir, 3), compact, compact_path, folded
        )
    ranks = {c.layer: c.rank for c in prune_report.changes}
    layers = [
        {
            "name": c.layer,
            "max_rank": c.max_rank,
            "rank": c.rank,
            "break_even": c.break_even,
            "energy_kept": c.energy_kept,
            "macs": c.macs_before,
            "kernel_shape": list(dense.get_layer(c.layer).kernel.shape),
            "projected": True,
            "compressed": c.rank < c.break_even,
        }
        for c in prune_report.changes
    ]
    results = {
        "script": "train_svd",
        "method": f"svd_{config.scheme}_{config.sparsity}",
        "trained_label": f"{os.path.basename(stage_path(run_dir, 3))} (SVD form)",
        "compact_label": "compact.keras (factorized)",
        "run_dir": run_dir,
        "config": dataclasses.asdict(config),
        "dataset": data.info(),
        "accuracy": accuracy,
        "costs": costs,
        **example_reports.compression_ratios(costs),
        "energy": energy,
        "ranks": ranks,
        "total_rank": int(sum(ranks.values())),
        "layers": layers,
        "tflite": files,
        "stages": stages,
        "history": history,
    }
    results["seconds"] = {
        "train": train_seconds,
        "export": time.perf_counter() - export_start,
        "total": time.perf_counter() - start,
    }
    if config.plots:
        what = f"{config.model} on {config.dataset}, {config.sparsity}, e={energy:.3g}"
        kept = "rank kept at pruning"
        results["plots"] = {
            "spectra": example_plots.plot_spectra(
                [
                    example_plots.spectra_column(
                        "after decomposed training (stage 1)", stage1_spectra, ranks, kept
                    ),
                    example_plots.spectra_column(
                        "after sparsity training (stage 2), as pruned", spectra, ranks, kept
                    ),
                ],
                os.path.join(run_dir, "spectra.png"),
                f"Singular values |s| per SVD layer; {what}",
            ),
            "ranks": example_plots.plot_ranks(
                layers, os.path.join(run_dir, "ranks.png"), f"Rank per layer after pruning: {what}"
            ),
        }
    results["stage_times"] = headers.rows
    example_reports.write_json(os.path.join(run_dir, "results.json"), results)
    print(example_reports.write_report(run_dir, results, [prune_report, factor_report]))
    print()
    print(headers.summary())
    return results


def define_flags():
    """The script's flags (defined only when run as a script)."""
    example_console.define_flags()
    flags.declare_key_flag("tf_logs")  # listed in this script's --help
    example_flags.define_data_flags()
    example_flags.define_recipe_flags(default_recipe="svd_paper", epochs_flag=False)
    example_flags.define_output_flags()
    flags.DEFINE_enum("scheme", "channel", ("channel", "spatial"), "SVD decomposition scheme.")
    flags.DEFINE_enum("init", "random", ("random", "svd"), "Initialisation of the factors.")
    flags.DEFINE_float("orthogonality", 1.0, "lambda_o, the orthogonality weight.")
    flags.DEFINE_enum(
        "sparsity", "hoyer", ("l1", "hoyer", "hoyer_square"), "Sparsity penalty on s."
    )
    flags.DEFINE_float("sparsity_weight", 0.01, "lambda_s of the sparsity stage.")
    flags.DEFINE_float("energy", 0.05, "Fraction of each layer's energy pruning removes.")
    flags.DEFINE_float("macs_target", None, "Instead: prune to keep at most this fraction of MACs.")
    flags.DEFINE_integer("decomposed_epochs", 10, "Epochs of stage 1.")
    flags.DEFINE_integer("sparsity_epochs", 10, "Epochs of stage 2.")
    flags.DEFINE_integer("finetune_epochs", 5, "Epochs of stage 4.")
    flags.DEFINE_float("finetune_learning_rate", None, "Stage 4 learning rate (default: recipe's).")
    flags.DEFINE_enum(
        "preset",
        None,
        [p.name for p in example_flags.example_presets.PRESETS.values() if p.script == "train_svd"],
        "The paper's setting (flags given override it).",
    )


def main(argv):
    del argv
    run(example_flags.config_from_flags(SVDConfig, "train_svd"))


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark tool: per-layer LRPET ranks for a parameter budget, from a dense model.

LRPET's `prune_ratio` g gives every conv the same share of its max rank. On a
small network the layers are far from equally sensitive: in `small_cnn` on
Fashion-MNIST, truncating a 32-channel conv of the first block to g=0.65's
rank 11 costs more than a 64-channel conv of the second block at rank 16.
This script spends the same parameter budget where it hurts least:

1. From a trained dense model (a `train_lrpet.py --method=dense` run folder),
   BN folded (`lrpet_tf.fold_batchnorm`), so each kernel is the BN-merged
   kernel LRPET's rectified projection works on.
2. Sensitivity: for each conv LRPET would project and each rank r from 1 up
   to its break-even rank (beyond it the layer stays dense), the kernel is
   replaced by its rank-r projection with energy transfer
   (`lrpet_tf.ops.low_rank_projection`, the callback's own op), every other
   layer left as it is; the increase of the mean cross-entropy on training
   images is the layer's cost of rank r. The curve is made non-increasing in
   r (a rank-r layer can be any lower-rank one).
3. Allocation: the ranks minimising the sum of the layers' costs with the
   factorized parameters (`lrpet_tf.ops.factorized_params`) at most those of
   the uniform prune ratio g, solved exactly by dynamic programming over the
   layers.

The ranks go to training from scratch with `LRPET(ranks=...)`: the output
has the `--ranks` value for `train_lrpet.py` and `int8_study.py`. The sum of
one-layer-at-a-time costs ignores how layers interact and what training
recovers; it is a ranking of where rank is cheap, and the trained results
(RESULTS.md section 5) are what tell whether it helps.

Results: `<output_dir>/rank_allocation.json` and `rank_allocation.md`
(default `benchmarks/results/`).

Usage:
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=. python benchmarks/rank_allocation.py \\
        --run_dir=saved_models/int8_study_e15_nostem/dense --prune_ratio=0.65 --exclude=stem
    PYTHONPATH=. python benchmarks/rank_allocation.py --smoke     # seconds
"""

import dataclasses
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.rank_allocation
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

_ROOT = os.path.dirname(bench_utils.BENCHMARKS_DIR)
sys.path.insert(0, os.path.join(_ROOT, "examples"))

import example_config  # noqa: E402
import example_models  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

__all__ = ["AllocationConfig", "allocate", "rank_costs", "run"]

NAME = "rank_allocation"


@dataclasses.dataclass
class AllocationConfig:
    """What `run` allocates for.

    Attributes:
        run_dir: A dense run folder of `train_lrpet.py` (`trained.keras` and
            the `config.json` whose data settings are reused).
        prune_ratio: The budget: the factorized parameters LRPET's uniform g
            gives the same layers.
        exclude: Conv layers left dense, as `LRPET(exclude=...)`.
        images: Training images the cross-entropy is measured on.
        batch_size: Forward-pass batch size.
        output_dir: Folder of the result files (default benchmarks/results).
        command: The command line, for the table.
    """

    run_dir: str = None
    prune_ratio: float = 0.65
    exclude: tuple = ()
    images: int = 3000
    batch_size: int = 1000
    output_dir: str = None
    command: str = None

    def __post_init__(self):
        if not 0 <= self.prune_ratio < 1:
            raise ValueError(
                f"Expected `prune_ratio` in [0, 1). Received: prune_ratio={self.prune_ratio}"
            )
        if self.images < 1:
            raise ValueError(f"Expected `images` >= 1. Received: images={self.images}")


def _mean_cross_entropy(model, x, y, batch_size):
    total = 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size], training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y[start : start + batch_size], logits=logits
        )
        total += float(tf.reduce_sum(losses))
    return total / len(x)


def rank_costs(model, layer_names, x, y, batch_size=1000):
    """Per layer and rank, the cross-entropy increase of projecting that layer alone.

    Args:
        model: A trained model whose BN is folded (the kernels are BN-merged);
            its weights are restored before returning.
        layer_names: Conv/Dense layers to measure.
        x, y: Images and integer labels.
        batch_size: Forward-pass batch size.

    Returns:
        `(base, costs)`: the model's mean cross-entropy and a dict layer name
        -> {rank: increase}, ranks 1 .. floor(break-even rank), the increases
        made non-increasing in the rank.
    """
    base = _mean_cross_entropy(model, x, y, batch_size)
    costs = {}
    for name in layer_names:
        layer = model.get_layer(name)
        weights = layer.get_weights()
        kernel = weights[0]
        matrix = lrpet_tf.ops.kernel_to_matrix(kernel)
        shape = tuple(matrix.shape)
        top = int(lrpet_tf.ops.break_even_rank(shape))
        top = min(top, lrpet_tf.ops.max_rank(shape))
        curve, best = {}, np.inf
        try:
            for rank in range(1, top + 1):
                projected = lrpet_tf.ops.low_rank_projection(matrix[tf.newaxis], [rank]).matrices
                layer.set_weights(
                    [lrpet_tf.ops.matrix_to_kernel(projected[0], kernel.shape).numpy()]
                    + weights[1:]
                )
                best = min(best, _mean_cross_entropy(model, x, y, batch_size) - base)
                curve[rank] = best
        finally:
            layer.set_weights(weights)
        costs[name] = curve
    return base, costs


def allocate(costs, unit_params, budget):
    """Ranks minimising the summed costs under a parameter budget (exact).

    Args:
        costs: Layer name -> {rank: cost}.
        unit_params: Layer name -> parameters per unit of rank (`rows + cols`
            of its matrix view: `factorized_params` without the bias).
        budget: The most parameters the chosen ranks may cost in all.

    Returns:
        `(ranks, total_cost)`: a dict layer name -> rank, and its summed cost.

    Raises:
        ValueError: If even the lowest ranks exceed `budget`.
    """
    # Pareto frontier of (parameters, cost) over the layers seen so far.
    frontier = {0: (0.0, {})}
    for name, curve in costs.items():
        options = {}
        for used, (cost, ranks) in frontier.items():
            for rank, layer_cost in curve.items():
                spent = used + rank * unit_params[name]
                if spent <= budget and (
                    spent not in options or cost + layer_cost < options[spent][0]
                ):
                    options[spent] = (cost + layer_cost, {**ranks, name: rank})
        frontier, best = {}, np.inf
        for spent in sorted(options):
            if options[spent][0] < best:
                best = options[spent][0]
                frontier[spent] = options[spent]
        if not frontier:
            raise ValueError(
                f"Expected a `budget` of at least the lowest ranks' parameters. "
                f"Received: budget={budget}"
            )
    total, ranks = min(frontier.values(), key=lambda entry: entry[0])
    return ranks, total


def _smoke_run_dir(tmp):
    """A width-4 small_cnn trained one epoch on 8x8 synthetic images: a dense run folder."""
    data_settings = example_config.DataSettings(dataset="synthetic", seed=0)
    data = data_settings.load_data()
    model = example_models.build_model("small_cnn", data.input_shape, data.num_classes, 4)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0)
    run_dir = os.path.join(tmp, "dense")
    os.makedirs(run_dir, exist_ok=True)
    example_training.save_model(model, os.path.join(run_dir, "trained.keras"))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(data_settings), f)
    return run_dir


def run(config=None, smoke=False, output_dir=None):
    """Measures the rank costs, allocates the budget; writes and returns the results.

    Args:
        config: An `AllocationConfig`.
        smoke: Instead, a width-4 small_cnn trained for one epoch on synthetic
            images, g=0.5, stem dense, 200 images.
        output_dir: For `smoke`: where everything goes.

    Returns:
        The results dict written to `<output_dir>/rank_allocation.json`.
    """
    if smoke:
        output_dir = output_dir or os.path.join(tempfile.gettempdir(), f"{NAME}_smoke")
        config = AllocationConfig(
            run_dir=_smoke_run_dir(output_dir),
            prune_ratio=0.5,
            exclude=("stem",),
            images=200,
            output_dir=output_dir,
            command="rank_allocation.py --smoke",
        )
    run_dir = config.run_dir if config else None
    needed = ("trained.keras", "config.json")
    if not run_dir or not all(os.path.exists(os.path.join(run_dir, f)) for f in needed):
        raise ValueError(
            "Expected `run_dir` to be a dense train_lrpet run folder (trained.keras and "
            f"config.json). Received: run_dir={run_dir!r}"
        )
    start = time.perf_counter()
    with open(os.path.join(config.run_dir, "config.json")) as f:
        saved = json.load(f)
    fields = {field.name for field in dataclasses.fields(example_config.DataSettings)}
    data = example_config.DataSettings(
        **{key: value for key, value in saved.items() if key in fields}
    ).load_data()
    model = lrpet_tf.fold_batchnorm(
        example_training.load_model(os.path.join(config.run_dir, "trained.keras"))
    )
    uniform = lrpet_tf.LRPET(
        prune_ratio=config.prune_ratio, exclude=tuple(config.exclude) or None, verbose=0
    )
    uniform.prepare(model)
    uniform_ranks = dict(uniform.ranks)
    shapes = {name: model.get_layer(name).get_weights()[0].shape for name in uniform_ranks}
    unit = {
        name: lrpet_tf.ops.factorized_params(shape, 1, use_bias=False)
        for name, shape in shapes.items()
    }
    budget = sum(unit[name] * rank for name, rank in uniform_ranks.items())

    x, y = data.x_train[: config.images], data.y_train[: config.images]
    base, costs = rank_costs(model, list(uniform_ranks), x, y, config.batch_size)
    ranks, total = allocate(costs, unit, budget)
    results = {
        "config": dataclasses.asdict(config),
        "machine": bench_utils.machine_info(),
        "dataset": {"name": data.name, "images": int(len(x))},
        "base_cross_entropy": base,
        "budget_params": budget,
        "uniform": {
            "ranks": uniform_ranks,
            "params": budget,
            "summed_cost": sum(costs[name][rank] for name, rank in uniform_ranks.items()),
        },
        "allocated": {
            "ranks": ranks,
            "params": sum(unit[name] * rank for name, rank in ranks.items()),
            "summed_cost": total,
        },
        "ranks_flag": ",".join(f"{name}={rank}" for name, rank in ranks.items()),
        "costs": costs,
        "seconds": time.perf_counter() - start,
    }
    markdown = render(results)
    bench_utils.write_results(NAME, results, markdown, config.output_dir)
    print(markdown)
    return results


def render(results):
    """The markdown: command, the per-layer table and the `--ranks` value."""
    config, uniform, allocated = results["config"], results["uniform"], results["allocated"]
    rows = []
    for name, rank in uniform["ranks"].items():
        costs = results["costs"][name]
        rows.append(
            [
                name,
                max(costs),
                rank,
                costs[rank],
                allocated["ranks"][name],
                costs[allocated["ranks"][name]],
            ]
        )
    rows.append(
        [
            "sum",
            "",
            uniform["params"],
            uniform["summed_cost"],
            allocated["params"],
            allocated["summed_cost"],
        ]
    )
    return "\n".join(
        [
            f"`{config['command']}`",
            "",
            f"Dense model `{config['run_dir']}`, BN folded; cost = increase of the mean "
            f"cross-entropy ({results['base_cross_entropy']:.4f}) on "
            f"{results['dataset']['images']:,} training images when that layer alone is "
            "projected. Budget: the "
            f"{results['budget_params']:,} factorized parameters of g={config['prune_ratio']} "
            "(the sum row gives parameters in the rank columns).",
            "",
            bench_utils.markdown_table(
                [
                    "layer",
                    "ranks measured",
                    f"rank g={config['prune_ratio']}",
                    "cost",
                    "allocated rank",
                    "cost",
                ],
                rows,
                digits=3,
            ),
            "",
            f"`--ranks={results['ranks_flag']}`",
        ]
    )


def define_flags():
    """The script's flags (defined only when run as a script)."""
    defaults = AllocationConfig()
    flags.DEFINE_bool("smoke", False, "A width-4 model on synthetic data: a quick check.")
    flags.DEFINE_string("run_dir", None, "Dense train_lrpet run folder (trained.keras).")
    flags.DEFINE_float("prune_ratio", defaults.prune_ratio, "Budget: the params of this g.")
    flags.DEFINE_list("exclude", [], "Conv layers left dense, e.g. stem.")
    flags.DEFINE_integer("images", defaults.images, "Training images of the cross-entropy.")
    flags.DEFINE_string("output_dir", None, "Results folder (default: benchmarks/results).")


def main(argv):
    del argv
    values = flags.FLAGS
    config = None
    if not values.smoke:
        config = AllocationConfig(
            run_dir=values.run_dir,
            prune_ratio=values.prune_ratio,
            exclude=tuple(values.exclude),
            images=values.images,
            output_dir=values.output_dir,
            command=bench_utils.command_line(),
        )
    run(config, smoke=values.smoke, output_dir=values.output_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark tool: per-layer LRPET ranks for g's parameter budget, from a dense model.

LRPET's `prune_ratio` g gives every conv the same share of its max rank. On a
small network the layers are far from equally sensitive: in `small_cnn` on
Fashion-MNIST, truncating a 32-channel conv of the first block to g=0.65's
rank 11 costs more than a 64-channel conv of the second block at rank 16.
This script runs `lrpet_tf.allocate_ranks` on a trained dense model (a
`train_lrpet.py --method=dense` run folder): for each conv LRPET would
project at g, the cross-entropy increase on training images when that conv
alone is projected to each rank below break-even, then the ranks with the
least summed increase whose factorized parameters are at most g's.

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
    PYTHONPATH=. python benchmarks/rank_allocation.py \\
        --render_from=benchmarks/results/rank_allocation.json    # the table only
"""

import dataclasses
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.rank_allocation
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_utils

bench_utils.add_examples_to_path()

import example_config  # noqa: E402
import example_models  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

__all__ = ["AllocationConfig", "allocate", "run"]

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


def _cross_entropy(y_true, logits):
    labels = tf.cast(y_true, tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def allocate(model, x, y, prune_ratio, exclude=(), batch_size=1000):
    """`lrpet_tf.allocate_ranks` for the parameters of g on `model` (logits out).

    Returns:
        A dict: `uniform_ranks` (g's, with `exclude` left dense), `ranks` (the
        allocation) and `costs` (layer name -> {rank: cross-entropy increase
        on `(x, y)`}).
    """
    uniform = lrpet_tf.LRPET(prune_ratio=prune_ratio, exclude=tuple(exclude) or None, verbose=0)
    uniform.prepare(model)
    ranks, costs = lrpet_tf.allocate_ranks(
        model, x, y, uniform, loss=_cross_entropy, batch_size=batch_size, return_costs=True
    )
    return {"uniform_ranks": dict(uniform.ranks), "ranks": ranks, "costs": costs}


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
    model = example_training.load_model(os.path.join(config.run_dir, "trained.keras"))
    x, y = data.x_train[: config.images], data.y_train[: config.images]
    allocation = allocate(model, x, y, config.prune_ratio, config.exclude, config.batch_size)
    uniform_ranks, ranks, costs = (allocation[k] for k in ("uniform_ranks", "ranks", "costs"))
    unit = {
        name: lrpet_tf.ops.factorized_params(model.get_layer(name).kernel.shape, 1, False)
        for name in uniform_ranks
    }
    budget = sum(unit[name] * rank for name, rank in uniform_ranks.items())
    total = sum(costs[name][rank] for name, rank in ranks.items())
    results = {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_dir"},
        "machine": bench_utils.machine_info(),
        "dataset": {"name": data.name, "images": int(len(x))},
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
    bench_utils.write_results(NAME, results, markdown, config.output_dir, compact=True)
    print(markdown)
    return results


def render(results):
    """The markdown: command, the per-layer table and the `--ranks` value."""
    config, uniform, allocated = results["config"], results["uniform"], results["allocated"]
    # Rank -> cost; a JSON file has the ranks as strings.
    all_costs = {
        name: {int(rank): cost for rank, cost in curve.items()}
        for name, curve in results["costs"].items()
    }
    rows = []
    for name, rank in uniform["ranks"].items():
        costs = all_costs[name]
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
            f"Dense model `{config['run_dir']}`{_how(results)}; cost = increase "
            f"of the mean cross-entropy{_base(results)} on "
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


def _how(results):
    # Runs before 4e74a27 measured with this script's own code (on the BN-folded
    # model) and recorded the dense model's cross-entropy.
    return " (`lrpet_tf.allocate_ranks`)" if "base_cross_entropy" not in results else ", BN folded"


def _base(results):
    base = results.get("base_cross_entropy")
    return f" ({base:.4f})" if base is not None else ""


def define_flags():
    """The script's flags (defined only when run as a script)."""
    defaults = AllocationConfig()
    flags.DEFINE_bool("smoke", False, "A width-4 model on synthetic data: a quick check.")
    flags.DEFINE_string("run_dir", None, "Dense train_lrpet run folder (trained.keras).")
    flags.DEFINE_float("prune_ratio", defaults.prune_ratio, "Budget: the params of this g.")
    flags.DEFINE_list("exclude", [], "Conv layers left dense, e.g. stem.")
    flags.DEFINE_integer("images", defaults.images, "Training images of the cross-entropy.")
    flags.DEFINE_string("output_dir", None, "Results folder (default: benchmarks/results).")
    flags.DEFINE_string("render_from", None, "Only rewrite the table from this results JSON.")


def main(argv):
    del argv
    values = flags.FLAGS
    if values.render_from:
        with open(values.render_from, encoding="utf-8") as f:
            results = json.load(f)
        bench_utils.write_results(NAME, results, render(results), values.output_dir, compact=True)
        return
    config = None
    if not values.smoke:
        config = AllocationConfig(
            run_dir=values.run_dir,
            prune_ratio=values.prune_ratio,
            exclude=tuple(values.exclude),
            images=values.images,
            output_dir=values.output_dir,
            command=bench_utils.command_line(drop=("--output_dir",)),
        )
    run(config, smoke=values.smoke, output_dir=values.output_dir)


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark 4, training step cost: SVD-form and compact models against the dense one.

One architecture, four trainable forms of it, timed interleaved in one run
(`train_on_batch`, one step of each per round after warm-up, SGD with
momentum, random data of the right shape):

* `dense`: the plain model (what LRPET trains; its callback's cost is
  benchmark 2).
* `svd_channel`: `lrpet_tf.svd_training.decompose(scheme="channel")`, every
  Conv2D an `SVDConv2D` and the Dense layers `SVDDense`, at full rank, with
  the orthogonality and Hoyer sparsity regularisers on (stage 2 of SVD
  training, the most expensive one).
* `svd_spatial`: `svd_channel` with the spatial-wise scheme for the convs.

For the SVD forms the table also gives the MACs of the orthogonality
penalty's Gram matrices `U^T U` and `V^T V` (`(rows + cols) * r^2` per layer,
forward only): they are paid once per step whatever the batch size, and
`decompose`'s `svd_orthogonality` log metric computes them a second time.
* `compact`: `lrpet_tf.factorize` at the paper's prune ratio (every Conv2D
  and hidden Dense at `r = int(K - K*g)`, the classifier left dense; layers
  not below break-even stay dense), BatchNormalization kept:
  what training or fine-tuning the compact model directly costs.

Models: the CIFAR ResNet-56 (batch 128, the paper's) and an MLP
(784-1024-1024-10, batch 128) where the SVDDense layers carry all the cost.

Usage:
    PYTHONPATH=. python benchmarks/training_step_cost.py            # full (~12 min)
    PYTHONPATH=. python benchmarks/training_step_cost.py --smoke    # seconds
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.training_step_cost
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

__all__ = [
    "build_variants",
    "compact_ranks",
    "gram_matrix_macs",
    "mlp",
    "render",
    "run",
    "step_times",
]

PRUNE_RATIO = 0.57
VARIANTS = ("dense", "svd_channel", "svd_spatial", "compact")


def mlp(input_dim=784, hidden=1024, num_classes=10):
    """An MLP `input_dim -> hidden -> hidden -> num_classes` with ReLU."""
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Dense(hidden, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(hidden, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="mlp")


def _base_model(name):
    if name == "mlp":
        return mlp()
    if name == "tiny_mlp":
        return mlp(16, 32, 4)
    model, _ = bench_models.whole_model(name)
    return model


def build_variants(model, variants=VARIANTS, prune_ratio=PRUNE_RATIO):
    """The trainable forms of `model` compared here.

    Args:
        model: A built dense model (not modified).
        variants: Names from `VARIANTS`; `svd_spatial` is skipped for a model
            without Conv2D layers (it would equal `svd_channel`).
        prune_ratio: The paper's `g` for `compact`.

    Returns:
        Dict name -> model.
    """
    has_conv = any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    built = {}
    for name in variants:
        if name == "dense":
            built[name] = model
        elif name in ("svd_channel", "svd_spatial"):
            if name == "svd_spatial" and not has_conv:
                continue
            built[name] = lrpet_tf.svd_training.decompose(
                model,
                scheme=name.split("_")[1],
                orthogonality=1.0,
                sparsity="hoyer",
                sparsity_weight=1e-3,
                layer_types=("conv", "dense"),
            )
        elif name == "compact":
            built[name] = lrpet_tf.factorize(model, ranks=compact_ranks(model, prune_ratio))
        else:
            raise ValueError(f"Expected a variant in {VARIANTS}. Received: {name!r}")
    return built


def compact_ranks(model, prune_ratio):
    """Layer name -> `r = int(K - K*g)` for every Conv2D and hidden Dense (not the classifier)."""
    policy = lrpet_tf.PruneRatio(prune_ratio)
    ranks = {}
    for layer in model.layers:
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        if layer.name == "classifier" or layer is model.layers[-1]:
            continue
        shape = tuple(int(d) for d in layer.kernel.shape)
        ranks[layer.name] = policy.rank(layer.name, (int(np.prod(shape[:-1])), shape[-1]))
    return ranks


def gram_matrix_macs(model):
    """MACs of the Gram matrices `U^T U` and `V^T V` of every SVD layer (one evaluation)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, lrpet_tf.svd_training.SVDLayer):
            for factor in (layer.u, layer.v):
                rows, rank = (int(d) for d in factor.shape)
                total += rows * rank * rank
    return total


def _compile(model, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )
    return model


def step_times(models, batch_size, rounds=6, warmup=2, seed=0, run_eagerly=False):
    """Seconds per `train_on_batch` of each model, interleaved.

    Args:
        models: Dict name -> model with the same input and output shapes.
        batch_size: Examples per step.
        rounds: Timed rounds.
        warmup: Untimed rounds first (the first traces the train function).
        seed: Seed of the random batch.
        run_eagerly: Train without `tf.function` (smoke runs: no tracing).

    Returns:
        `(wall, cpu)`: dicts name -> array of wall seconds and of this
        process's CPU seconds (all threads) per step.
    """
    first = next(iter(models.values()))
    input_shape = tuple(first.inputs[0].shape[1:])
    classes = int(first.outputs[0].shape[-1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size,) + input_shape).astype(np.float32)
    y = rng.integers(0, classes, batch_size)
    for model in models.values():
        _compile(model, run_eagerly)
    candidates = {}
    for name, model in models.items():
        candidates[name] = (lambda m: lambda: m.train_on_batch(x, y))(model)
    cpu = {}
    wall = bench_utils.interleaved_times(candidates, rounds, warmup=warmup, cpu_times=cpu)
    return wall, cpu


def model_benchmark(name, batch_size, rounds, warmup, variants=VARIANTS, run_eagerly=False):
    """Step times of every variant of one model, with MACs and parameters."""
    keras.utils.set_random_seed(0)
    base = _base_model(name)
    models = build_variants(base, variants)
    load = bench_utils.load_average()
    times, cpu = step_times(
        models, batch_size, rounds=rounds, warmup=warmup, run_eagerly=run_eagerly
    )
    entry = {
        "model": name,
        "batch_size": batch_size,
        "run_eagerly": run_eagerly,
        "variants": {},
        "load_average": [load, bench_utils.load_average()],
    }
    dense_macs = None
    for variant, model in models.items():
        report = lrpet_tf.model_report(model)
        gram_macs = gram_matrix_macs(model)
        if variant == "dense":
            dense_macs = report.total_macs
        entry["variants"][variant] = {
            "params": int(report.total_params),
            "macs": int(report.total_macs),
            "step": bench_utils.summarize(times[variant]),
            "ratio_to_dense": bench_utils.paired_ratio(times[variant], times["dense"]),
            "cpu_step": bench_utils.summarize(cpu[variant]),
            "cpu_ratio_to_dense": bench_utils.paired_ratio(cpu[variant], cpu["dense"]),
            "jit_compile": bool(getattr(model, "jit_compile", False)),
            "gram_macs_per_step": gram_macs,
        }
    for v in entry["variants"].values():
        v["mac_ratio_to_dense"] = v["macs"] / dense_macs
    return entry


def run(
    models=("resnet56", "mlp"),
    batch_size=128,
    rounds=6,
    warmup=2,
    smoke=False,
    output_dir=None,
):
    """Runs benchmark 4 and writes `training_step_cost.json` / `.md`.

    Args:
        models: Model names (`"resnet56"`, `"resnet20"`, `"mlp"`, ...).
        batch_size: Examples per step.
        rounds: Timed interleaved rounds.
        warmup: Untimed rounds first.
        smoke: A tiny version that runs in seconds (for CI).
        output_dir: Where the JSON and markdown go (default benchmarks/results).

    Returns:
        The results dict (also written as JSON).
    """
    if smoke:
        # Eager: tracing four train functions would take most of a smoke run.
        models, batch_size, rounds, warmup = ("tiny",), 4, 2, 1
    results = {
        "benchmark": "training_step_cost",
        "smoke": smoke,
        "machine": bench_utils.machine_info(),
        "models": [],
    }
    for name in models:
        entry = model_benchmark(name, batch_size, rounds, warmup, run_eagerly=smoke)
        results["models"].append(entry)
        ratios = {k: round(v["ratio_to_dense"]["median"], 3) for k, v in entry["variants"].items()}
        print(f"{name}: step time / dense {ratios}", flush=True)
        keras.backend.clear_session()
    results["machine"]["load_average_end"] = bench_utils.load_average()
    bench_utils.write_results(
        "training_step_cost", results, to_markdown(results), output_dir, compact=True
    )
    return results


def render(results, output_dir=None):
    """Rewrites `training_step_cost.json` / `.md` from a results dict."""
    bench_utils.write_results(
        "training_step_cost", results, to_markdown(results), output_dir, compact=True
    )
    return results


def to_markdown(results):
    """The markdown table of benchmark 4."""
    rows = []
    for e in results["models"]:
        for variant, v in e["variants"].items():
            rows.append(
                [
                    e["model"],
                    variant,
                    v["params"],
                    f"{v['macs'] / 1e6:.1f}M",
                    v["mac_ratio_to_dense"],
                    f"{v.get('gram_macs_per_step', 0) / 1e6:.0f}M"
                    if v.get("gram_macs_per_step")
                    else "-",
                    v["step"]["median_ms"],
                    v["ratio_to_dense"]["median"],
                    f"{v['ratio_to_dense']['q25']:.2f}-{v['ratio_to_dense']['q75']:.2f}",
                    v["cpu_ratio_to_dense"]["median"],
                    f"{v['cpu_ratio_to_dense']['q25']:.2f}-{v['cpu_ratio_to_dense']['q75']:.2f}",
                ]
            )
    loads = "; ".join(
        f"{e['model']} {e['load_average'][0][0]:.2f} -> {e['load_average'][1][0]:.2f}"
        for e in results["models"]
    )
    first = results["models"][0] if results["models"] else None
    header = (
        f"Training step (`train_on_batch`, batch {first['batch_size']}, SGD momentum), "
        f"{first['variants']['dense']['step']['samples']} interleaved rounds after warm-up; "
        f"ratios = median of per-round step time / dense step time, in wall time and in this "
        f"process's CPU time (both threads; robust to other processes' load) "
        f"(load, 1 min: {loads}):"
        if first
        else "No models."
    )
    return "\n\n".join(
        [
            bench_utils.machine_markdown(results["machine"]),
            header
            + "\n\n"
            + bench_utils.markdown_table(
                [
                    "model",
                    "variant",
                    "params",
                    "MACs / example (forward)",
                    "MACs / dense",
                    "Gram MACs / step",
                    "step wall ms (median)",
                    "wall / dense",
                    "q25-q75",
                    "CPU time / dense",
                    "q25-q75",
                ],
                rows,
            ),
        ]
    )


FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags; called only when it runs as a script.

    So the benchmark modules can be imported together (tests) without absl's
    duplicate-flag errors.
    """
    flags.DEFINE_bool("smoke", False, "Tiny version that runs in seconds.")
    flags.DEFINE_list("models", ["resnet56", "mlp"], "Models to time.")
    flags.DEFINE_integer("batch_size", 128, "Examples per training step.")
    flags.DEFINE_integer("rounds", 6, "Timed interleaved rounds.")
    flags.DEFINE_integer("warmup", 2, "Untimed rounds first.")
    flags.DEFINE_string("output_dir", None, "Results folder (default benchmarks/results).")
    flags.DEFINE_string("render_from", None, "Only re-render the table from this results JSON.")


def main(argv):
    del argv
    if FLAGS.render_from:
        with open(FLAGS.render_from, encoding="utf-8") as f:
            render(json.load(f), FLAGS.output_dir)
        return
    run(
        models=tuple(FLAGS.models),
        batch_size=FLAGS.batch_size,
        rounds=FLAGS.rounds,
        warmup=FLAGS.warmup,
        smoke=FLAGS.smoke,
        output_dir=FLAGS.output_dir,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Benchmark 2, projection cost: one LRPET projection, and its share of training.

Part A, one full projection (every conv of the model) with the compiled
`lrpet_tf.callbacks.Projector`: per-layer SVDs (`batch_by_shape=False`)
against one batched SVD per group of same-shaped kernels (the default), with
NumPy's SVD of the same matrices (LAPACK, per layer, SVD only) as a
reference. The three run interleaved; before each call the original kernels
are restored (untimed), so every call projects the same full-rank weights.

Part B, the LRPET callback's overhead on training, as epoch-time ratios in one
run: three copies of the model (same initial weights) train interleaved one
epoch at a time, without the callback, with `LRPET(frequency="epoch")` and
with `LRPET(frequency=250)`, in wall time and in this process's CPU time
(robust to other processes' load). On two CPU cores a real CIFAR epoch (391
steps of 128) takes about half an hour, so an "epoch" here is `--epoch_steps`
steps; the every-250-steps callback then projects rarely inside the timed
epochs and its ratio measures mostly the per-step hook. The overhead of each
schedule on full-size epochs is derived from the measured ratio (and, as a
second estimate, from projection and step times), stated as derived.

Results: one entry per run in `benchmarks/results/projection_cost.json`,
keyed by its name (`--run_name`, default `main`; a re-check with other
settings gets its own), `projection_cost.md` the tables of every run and
`benchmarks/plots/projection_cost.png` the plot of the first.

Usage:
    PYTHONPATH=. python benchmarks/projection_cost.py            # full (~15 min)
    PYTHONPATH=. python benchmarks/projection_cost.py --smoke    # seconds
    PYTHONPATH=. python benchmarks/projection_cost.py \\
        --render_from=benchmarks/results/projection_cost.json    # tables and plot only
"""

import contextlib
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402
from lrpet_tf.callbacks import Projector  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.projection_cost
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

__all__ = [
    "callback_overhead",
    "cpu_derived_overheads",
    "projection_times",
    "render",
    "run",
    "run_markdown",
    "to_markdown",
    "train_step_seconds",
]

NAME = "projection_cost"

# The paper's prune ratios: ResNet-56 on CIFAR-10 0.57, ResNet-50 on ImageNet 0.62.
PRUNE_RATIOS = {"resnet56": 0.57, "resnet50": 0.62, "tiny": 0.5}
# Images per epoch, for the derived full-epoch overheads.
EPOCH_IMAGES = {"resnet56": 50_000, "resnet50": 1_281_167, "tiny": 50_000}


def _build(name, smoke):
    model, _ = bench_models.whole_model(name, small=smoke)
    return model


def projection_times(model, prune_ratio, rounds=10, warmup=1):
    """Times one full projection: per-layer vs batched-by-shape SVD, and NumPy's SVD.

    Args:
        model: A built Keras model (its kernels are restored after each call).
        prune_ratio: The paper's `g`; ranks are `int(K - K*g)`.
        rounds: Timed interleaved rounds.
        warmup: Untimed rounds first (the first traces the tf.functions).

    Returns:
        A dict with the layer and group counts, the first-call (trace + run)
        times, a `summarize` dict per variant and the paired ratios.
    """
    policy = lrpet_tf.PruneRatio(prune_ratio)
    batched = Projector(model, policy, batch_by_shape=True)
    per_layer = Projector(model, policy, batch_by_shape=False)
    originals = [(t.layer.kernel, t.layer.kernel.numpy()) for t in batched.targets]
    matrices = [k.reshape(-1, k.shape[-1]) for _, k in originals]

    def restore():
        for variable, value in originals:
            variable.assign(value)

    def numpy_svd():
        for m in matrices:
            np.linalg.svd(m, full_matrices=False)

    first_call = {}
    for name, projector in (("batched", batched), ("per_layer", per_layer)):
        restore()
        start = time.perf_counter()
        projector()
        first_call[name] = time.perf_counter() - start
    restore()
    candidates = {"per_layer": per_layer, "batched": batched, "numpy_svd": numpy_svd}
    before = {name: restore for name in candidates}
    # NumPy on one BLAS thread: on a loaded 2-core machine OpenBLAS's spinning
    # threads make its 2-thread SVD several times slower than one thread, and
    # TF runs each matrix's SVD on one thread too. (TF does not use OpenBLAS.)
    with _one_blas_thread():
        times = bench_utils.interleaved_times(candidates, rounds, warmup=warmup, before=before)
    restore()
    shapes = {}
    for t in batched.targets:
        shapes[t.matrix_shape] = shapes.get(t.matrix_shape, 0) + 1
    largest = max(batched.targets, key=lambda t: t.matrix_shape[0] * t.matrix_shape[1])
    return {
        "layers": len(batched.targets),
        "groups": len(shapes),
        "largest_matrix": list(largest.matrix_shape),
        "first_call_ms": {k: v * 1e3 for k, v in first_call.items()},
        "times": {name: bench_utils.summarize(t) for name, t in times.items()},
        "per_layer_over_batched": bench_utils.paired_ratio(times["per_layer"], times["batched"]),
        "numpy_over_batched": bench_utils.paired_ratio(times["numpy_svd"], times["batched"]),
        "batched_seconds": float(np.median(times["batched"])),
    }


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _random_data(input_shape, classes, count, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count,) + tuple(input_shape)).astype(np.float32)
    y = rng.integers(0, classes, count)
    return x, y


def _compiled_copy(model, weights):
    copy = keras.models.clone_model(model)
    copy.set_weights(weights)
    # keras.applications models end in a softmax; the CIFAR ResNet in logits.
    activation = getattr(copy.layers[-1], "activation", None)
    from_logits = getattr(activation, "__name__", "") != "softmax"
    copy.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )
    return copy


def callback_overhead(model, prune_ratio, epoch_steps, batch_size, rounds=8, step_frequency=250):
    """Epoch time with the LRPET callback over epoch time without it, interleaved.

    Args:
        model: A built model (cloned three times with its initial weights).
        prune_ratio: The paper's `g`.
        epoch_steps: Optimizer steps per (short) epoch.
        batch_size: Images per step.
        rounds: Timed interleaved epochs per variant (after one untimed).
        step_frequency: The step schedule's `frequency`.

    Returns:
        A dict with the epoch wall and CPU times per variant, their ratios to
        no callback, the projections run during timed epochs and the step time.
    """
    weights = model.get_weights()
    input_shape = tuple(model.inputs[0].shape[1:])
    classes = int(model.outputs[0].shape[-1])
    x, y = _random_data(input_shape, classes, epoch_steps * batch_size)
    callbacks = {
        "none": None,
        "epoch": lrpet_tf.LRPET(prune_ratio=prune_ratio, frequency="epoch", verbose=0),
        f"every_{step_frequency}_steps": lrpet_tf.LRPET(
            prune_ratio=prune_ratio, frequency=step_frequency, project_at_end=False, verbose=0
        ),
    }
    models = {name: _compiled_copy(model, weights) for name in callbacks}
    for name, cb in callbacks.items():
        if cb is not None:
            # Trace the callback's projection now: the step schedule's first
            # projection may fall inside a timed epoch.
            cb.set_model(models[name])
            cb.prepare(models[name])
            cb.project()
    counts = {name: [] for name in callbacks}

    def epoch(name):
        def train_one_epoch():
            cb = callbacks[name]
            before = cb.projection_count if cb is not None else 0
            models[name].fit(
                x,
                y,
                batch_size=batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[cb] if cb is not None else [],
            )
            counts[name].append((cb.projection_count if cb is not None else 0) - before)

        return train_one_epoch

    candidates = {name: epoch(name) for name in callbacks}
    cpu = {}
    times = bench_utils.interleaved_times(candidates, rounds, warmup=1, cpu_times=cpu)
    result = {
        "epoch_steps": epoch_steps,
        "batch_size": batch_size,
        "step_frequency": step_frequency,
        "times": {name: bench_utils.summarize(t) for name, t in times.items()},
        "cpu_times": {name: bench_utils.summarize(t) for name, t in cpu.items()},
        "ratio_to_none": {
            name: bench_utils.paired_ratio(times[name], times["none"])
            for name in callbacks
            if name != "none"
        },
        "cpu_ratio_to_none": {
            name: bench_utils.paired_ratio(cpu[name], cpu["none"])
            for name in callbacks
            if name != "none"
        },
        # Projections inside the timed epochs (the first, untimed one is dropped).
        "projections": {name: int(sum(c[1:])) for name, c in counts.items()},
        "step_seconds": float(np.median(times["none"])) / epoch_steps,
    }
    return result


def train_step_seconds(model, batch_size, steps=3):
    """Median seconds of one training step (after one untimed warm-up fit)."""
    input_shape = tuple(model.inputs[0].shape[1:])
    classes = int(model.outputs[0].shape[-1])
    x, y = _random_data(input_shape, classes, batch_size)
    copy = _compiled_copy(model, model.get_weights())
    copy.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        copy.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _derived_overheads(name, projection_seconds, step_seconds, batch_size, step_frequency):
    steps_per_epoch = math.ceil(EPOCH_IMAGES[name] / batch_size)
    return {
        "steps_per_epoch": steps_per_epoch,
        "epoch": projection_seconds / (steps_per_epoch * step_seconds),
        f"every_{step_frequency}_steps": projection_seconds / (step_frequency * step_seconds),
    }


def cpu_derived_overheads(results):
    """The callback's overhead on full-size epochs, from the measured CPU-time ratio.

    The per-epoch callback projects once per timed epoch of `S` steps and
    costs `ratio - 1` of that epoch's CPU time; one projection every `N`
    steps therefore costs `(ratio - 1) * S / N` of the training time.

    Returns:
        Dict model name -> `{"batch_size", "steps_per_epoch", "epoch",
        "every_<N>_steps"}` (fractions), or `{}` without an overhead run.
    """
    overhead = results.get("callback_overhead")
    if (
        not overhead
        or not overhead.get("cpu_ratio_to_none")
        or not overhead["projections"]["epoch"]
    ):
        return {}
    name = overhead["model"]
    rounds = overhead["cpu_times"]["epoch"]["samples"]
    per_epoch = overhead["projections"]["epoch"] / rounds
    extra = (overhead["cpu_ratio_to_none"]["epoch"]["median"] - 1.0) / per_epoch
    steps = overhead["epoch_steps"]
    steps_per_epoch = math.ceil(EPOCH_IMAGES[name] / overhead["batch_size"])
    frequency = overhead["step_frequency"]
    return {
        name: {
            "batch_size": overhead["batch_size"],
            "steps_per_epoch": steps_per_epoch,
            "epoch": extra * steps / steps_per_epoch,
            f"every_{frequency}_steps": extra * steps / frequency,
        }
    }


def run(
    models=("resnet56", "resnet50"),
    projection_rounds=10,
    overhead_model="resnet56",
    epoch_steps=8,
    batch_size=32,
    overhead_rounds=8,
    step_frequency=250,
    step_time_models=("resnet50",),
    step_time_batch=8,
    smoke=False,
    run_name=None,
    command=None,
    output_dir=None,
    plot_dir=None,
):
    """Runs benchmark 2 and adds it to `projection_cost.json` / `.md` (and the plot).

    Args:
        models: Models whose full projection is timed.
        projection_rounds: Interleaved rounds of the projection timing.
        overhead_model: Model trained for the callback overhead (None skips it).
        epoch_steps, batch_size, overhead_rounds, step_frequency: See
            `callback_overhead`.
        step_time_models: Models whose step time is measured only to derive
            the full-epoch overhead (too slow to train whole epochs here).
        step_time_batch: Their batch size.
        smoke: A tiny version that runs in seconds (for CI).
        run_name: The run's entry in the study's JSON (default `main`, or
            `smoke` for a smoke run).
        command: The command line to record (default: this process's).
        output_dir: Where the JSON and markdown go (default benchmarks/results).
        plot_dir: Where the PNG goes (default benchmarks/plots).

    Returns:
        The run's results dict (also written to the study's JSON).
    """
    if smoke:
        models, projection_rounds = ("tiny",), 2
        overhead_model, epoch_steps, batch_size, overhead_rounds = "tiny", 2, 4, 1
        step_time_models, step_frequency = (), 3
    results = {
        "benchmark": NAME,
        "smoke": smoke,
        "command": command or bench_utils.command_line(drop=("--output_dir", "--plot_dir")),
        "machine": bench_utils.machine_info(),
        "projection": {},
    }
    for name in models:
        keras.utils.set_random_seed(0)
        model = _build(name, smoke)
        start_load = bench_utils.load_average()
        entry = projection_times(model, PRUNE_RATIOS[name], rounds=projection_rounds)
        entry.update(
            prune_ratio=PRUNE_RATIOS[name],
            load_average=[start_load, bench_utils.load_average()],
        )
        results["projection"][name] = entry
        print(f"projection {name}: {_projection_line(entry)}", flush=True)
        del model
        keras.backend.clear_session()
    if overhead_model:
        keras.utils.set_random_seed(0)
        model = _build(overhead_model, smoke)
        start_load = bench_utils.load_average()
        overhead = callback_overhead(
            model,
            PRUNE_RATIOS[overhead_model],
            epoch_steps=epoch_steps,
            batch_size=batch_size,
            rounds=overhead_rounds,
            step_frequency=step_frequency,
        )
        overhead["model"] = overhead_model
        overhead["load_average"] = [start_load, bench_utils.load_average()]
        results["callback_overhead"] = overhead
        print(f"callback overhead: {overhead['ratio_to_none']}", flush=True)
        keras.backend.clear_session()
    derived = {}
    if overhead_model and overhead_model in results["projection"]:
        derived[overhead_model] = dict(
            _derived_overheads(
                overhead_model,
                results["projection"][overhead_model]["batched_seconds"],
                results["callback_overhead"]["step_seconds"],
                batch_size,
                step_frequency,
            ),
            batch_size=batch_size,
            step_seconds=results["callback_overhead"]["step_seconds"],
        )
    for name in step_time_models:
        if name not in results["projection"]:
            continue
        keras.utils.set_random_seed(0)
        model = _build(name, smoke)
        load = bench_utils.load_average()
        step = train_step_seconds(model, step_time_batch)
        derived[name] = dict(
            _derived_overheads(
                name,
                results["projection"][name]["batched_seconds"],
                step,
                step_time_batch,
                step_frequency,
            ),
            batch_size=step_time_batch,
            step_seconds=step,
            load_average=[load, bench_utils.load_average()],
        )
        keras.backend.clear_session()
    results["derived_overhead"] = derived
    results["machine"]["load_average_end"] = bench_utils.load_average()
    run_name = run_name or ("smoke" if smoke else "main")
    study = bench_utils.write_run(NAME, run_name, results, to_markdown, output_dir)
    _plot(study, plot_dir)
    return results


def _plot(study, plot_dir=None):
    plot_dir = plot_dir or os.path.join(bench_utils.BENCHMARKS_DIR, "plots")
    first = next(iter(study["runs"].values()))
    return plot_projection(first, os.path.join(plot_dir, "projection_cost.png"))


def render(study, output_dir=None, plot_dir=None):
    """Rewrites `projection_cost.json` / `.md` and the plot (of the first run) of a study."""
    bench_utils.write_results(NAME, study, to_markdown(study), output_dir, compact=True)
    _plot(study, plot_dir)
    return study


def _projection_line(entry):
    t = entry["times"]
    return (
        f"per-layer {t['per_layer']['median_ms']:.1f} ms, batched "
        f"{t['batched']['median_ms']:.1f} ms, numpy {t['numpy_svd']['median_ms']:.1f} ms"
    )


def to_markdown(study):
    """The markdown of every run of benchmark 2, in the order they ran."""
    parts = []
    for name, results in study["runs"].items():
        command = results.get("command") or "PYTHONPATH=. python benchmarks/projection_cost.py"
        parts += [f"### Run `{name}`", f"Command: `{command}`", run_markdown(results)]
    return "\n\n".join(parts)


def run_markdown(results):
    """The markdown tables of one run of benchmark 2."""
    parts = [bench_utils.machine_markdown(results["machine"])]
    rows = []
    for name, e in results["projection"].items():
        t = e["times"]
        rows.append(
            [
                name,
                e["prune_ratio"],
                e["layers"],
                e["groups"],
                "x".join(map(str, e["largest_matrix"])),
                t["per_layer"]["median_ms"],
                t["batched"]["median_ms"],
                t["numpy_svd"]["median_ms"],
                e["per_layer_over_batched"]["median"],
                e["numpy_over_batched"]["median"],
                e["first_call_ms"]["batched"],
                " / ".join(f"{x[0]:.2f}" for x in e["load_average"]),
            ]
        )
    parts.append(
        "One full projection (median ms over interleaved rounds; ratios are medians of "
        "per-round ratios):\n\n"
        + bench_utils.markdown_table(
            [
                "model",
                "g",
                "layers",
                "shape groups",
                "largest matrix",
                "per-layer SVD ms",
                "batched SVD ms",
                "NumPy SVD ms",
                "per-layer / batched",
                "NumPy / batched",
                "first call (trace) ms",
                "load 1-min start / end",
            ],
            rows,
        )
    )
    overhead = results.get("callback_overhead")
    if overhead:
        rows = [
            [
                "none",
                overhead["times"]["none"]["median_ms"] / 1e3,
                1.0,
                "-",
                overhead["cpu_times"]["none"]["median_ms"] / 1e3,
                1.0,
                "-",
                0,
            ]
        ]
        for name, ratio in overhead["ratio_to_none"].items():
            cpu = overhead["cpu_ratio_to_none"][name]
            rows.append(
                [
                    name,
                    overhead["times"][name]["median_ms"] / 1e3,
                    ratio["median"],
                    f"{ratio['q25']:.3f}-{ratio['q75']:.3f}",
                    overhead["cpu_times"][name]["median_ms"] / 1e3,
                    cpu["median"],
                    f"{cpu['q25']:.3f}-{cpu['q75']:.3f}",
                    overhead["projections"][name],
                ]
            )
        parts.append(
            f"LRPET callback overhead, {overhead['model']}: epochs of "
            f"{overhead['epoch_steps']} steps x batch {overhead['batch_size']}, "
            f"{overhead['times']['none']['samples']} interleaved epochs per variant "
            f"(load {overhead['load_average'][0][0]:.2f} -> "
            f"{overhead['load_average'][1][0]:.2f}):\n\n"
            + bench_utils.markdown_table(
                [
                    "callback",
                    "epoch wall s",
                    "wall / no callback",
                    "q25-q75",
                    "epoch CPU s",
                    "CPU / no callback",
                    "q25-q75",
                    "projections in timed epochs",
                ],
                rows,
                digits=3,
            )
        )
    rows = []
    frequency = (results.get("callback_overhead") or {}).get("step_frequency", 250)
    for name, d in cpu_derived_overheads(results).items():
        rows.append(
            [
                name,
                "CPU: measured epoch overhead x epoch steps / steps between projections",
                d["batch_size"],
                d["steps_per_epoch"],
                100 * d["epoch"],
                100 * d[f"every_{frequency}_steps"],
            ]
        )
    for name, d in (results.get("derived_overhead") or {}).items():
        rows.append(
            [
                name,
                f"wall: projection {results['projection'][name]['batched_seconds']:.2f} s / "
                f"({d['step_seconds']:.2f} s per step x steps between projections)",
                d["batch_size"],
                d["steps_per_epoch"],
                100 * d["epoch"],
                100 * d[f"every_{frequency}_steps"],
            ]
        )
    if rows:
        parts.append(
            "Derived overhead of the projections on full-size training, in % of training "
            "time (per-epoch: one projection per epoch of 50,000 CIFAR or 1,281,167 ImageNet "
            "images at the batch size given):\n\n"
            + bench_utils.markdown_table(
                [
                    "model",
                    "basis",
                    "batch",
                    "steps / epoch",
                    "per-epoch schedule %",
                    f"every {frequency} steps %",
                ],
                rows,
                digits=3,
            )
        )
    return "\n\n".join(parts)


def plot_projection(results, path):
    """Bar chart of one projection's time per model and variant (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["projection"])
    variants = (
        ("per_layer", "per-layer tf.linalg.svd"),
        ("batched", "batched by shape (default)"),
        ("numpy_svd", "NumPy SVD only, 1 BLAS thread (reference)"),
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.26
    for i, (key, label) in enumerate(variants):
        values = [results["projection"][n]["times"][key]["median_ms"] for n in names]
        xs = np.arange(len(names)) + (i - 1) * width
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(
        [f"{n}\n({results['projection'][n]['layers']} convs)" for n in names], fontsize=9
    )
    ax.set_yscale("log")
    ax.set_ylabel("time of one full projection (ms, log scale)")
    loads = [x[0] for e in results["projection"].values() for x in e["load_average"]]
    ax.set_title(
        "LRPET projection cost: all convs, one call (median of interleaved rounds)\n"
        f"2-core CPU shared with other jobs, load {min(loads):.1f}-{max(loads):.1f}",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return bench_utils.save_figure(fig, path)


FLAGS = flags.FLAGS


def define_flags():
    """Defines the script's flags; called only when it runs as a script.

    So the benchmark modules can be imported together (tests) without absl's
    duplicate-flag errors.
    """
    flags.DEFINE_bool("smoke", False, "Tiny version that runs in seconds.")
    flags.DEFINE_list("models", ["resnet56", "resnet50"], "Models to project.")
    flags.DEFINE_integer("projection_rounds", 10, "Interleaved rounds of projection timing.")
    flags.DEFINE_string("overhead_model", "resnet56", "Model trained for the callback overhead.")
    flags.DEFINE_integer("epoch_steps", 8, "Steps per timed epoch.")
    flags.DEFINE_integer("batch_size", 32, "Batch size of the timed epochs.")
    flags.DEFINE_integer("overhead_rounds", 8, "Timed interleaved epochs per variant.")
    flags.DEFINE_integer("step_frequency", 250, "Frequency of the step schedule.")
    flags.DEFINE_integer("step_time_batch", 8, "Batch size of the ResNet50 step time.")
    flags.DEFINE_string("run_name", None, "The run's name in the results (default main).")
    flags.DEFINE_string("output_dir", None, "Results folder (default benchmarks/results).")
    flags.DEFINE_string("plot_dir", None, "Plot folder (default benchmarks/plots).")
    flags.DEFINE_string(
        "render_from", None, "Only re-render tables and plots from this results JSON."
    )


def main(argv):
    del argv
    if FLAGS.render_from:
        render(bench_utils.read_study(FLAGS.render_from, NAME), FLAGS.output_dir, FLAGS.plot_dir)
        return
    run(
        models=tuple(FLAGS.models),
        projection_rounds=FLAGS.projection_rounds,
        overhead_model=FLAGS.overhead_model or None,
        epoch_steps=FLAGS.epoch_steps,
        batch_size=FLAGS.batch_size,
        overhead_rounds=FLAGS.overhead_rounds,
        step_frequency=FLAGS.step_frequency,
        step_time_batch=FLAGS.step_time_batch,
        smoke=FLAGS.smoke,
        run_name=FLAGS.run_name,
        output_dir=FLAGS.output_dir,
        plot_dir=FLAGS.plot_dir,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

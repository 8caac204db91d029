"""What each rank costs on the runtime a model ships to: `latency_table`, `LatencyTable`.

MACs are a poor proxy for XNNPACK latency on narrow layers: latency is a
staircase in the rank (flat over a run of ranks, then a step), and a narrow
layer's factorized pair can be slower than the layer at ranks well below its
MAC break-even (benchmarks/RESULTS.md section 3). `latency_table` measures,
for every low-rank layer of a model, the LiteRT latency of the dense layer
and of its factorized pair at the ranks where the time steps, each layer on
its own at its real input shape; `LatencyTable` answers what a layer costs at
a rank, and is saved and loaded as JSON (so a table measured on a phone can
plan on a workstation). `allocate_ranks(cost="latency")`, `factorize` and
`PruneRatio(round_to="latency")` use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import Literal

import numpy as np

from lrpet_tf._keras import keras
from lrpet_tf.export.export_tflite import export_tflite
from lrpet_tf.export.latency import measure_latency
from lrpet_tf.graph.fold_batchnorm import fold_batchnorm
from lrpet_tf.graph.layer_graph import LayerGraph
from lrpet_tf.graph.layer_kinds import unsupported_reason
from lrpet_tf.graph.targets import LayerSelector
from lrpet_tf.graph.targets import LayerTypes
from lrpet_tf.graph.targets import check_layer_names
from lrpet_tf.graph.targets import layers_by_name
from lrpet_tf.graph.targets import select_targets
from lrpet_tf.ops.arguments import check_int
from lrpet_tf.ops.arguments import check_number
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.rank_policy import HasRanks
from lrpet_tf.ops.ranks import break_even_rank

__all__ = ["LatencyTable", "LayerLatency", "find_steps", "latency_table"]

_FORMAT = "lrpet_tf.latency_table/1"


def find_steps(
    cost: Callable[[int], float], low: int, high: int, same: Callable[[float, float], bool]
) -> list[tuple[int, int, float]]:
    """The steps of a non-decreasing step function on the integers `[low, high]`.

    Evaluates `cost` at the ends of a range and splits it in two only where
    the two ends differ, so a staircase of S steps over N integers takes
    about `2 * S * log2(N / S)` evaluations instead of N. Exact for a
    non-decreasing function; adjacent steps whose values are `same` merge.

    Args:
        cost: `cost(r) -> float`.
        low, high: The integer range, `low <= high`.
        same: `same(a, b) -> bool`: whether two values are one step.

    Returns:
        A list of `(first, last, value)` covering `[low, high]` in order,
        `value` the cost at `last` (the top of the step).
    """
    values = {}

    def f(r):
        if r not in values:
            values[r] = float(cost(r))
        return values[r]

    steps = []

    def split(lo, hi):
        if lo == hi or same(f(lo), f(hi)):
            steps.append([lo, hi])
        else:
            middle = (lo + hi) // 2
            split(lo, middle)
            split(middle + 1, hi)

    split(low, high)
    merged: list[list[int]] = []
    for lo, hi in steps:
        if merged and same(f(merged[-1][1]), f(hi)):
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return [(lo, hi, f(hi)) for lo, hi in merged]


@dataclasses.dataclass
class LayerLatency:
    """One layer's measured costs.

    Attributes:
        signature: What the timing depends on (class, input shape, kernel,
            strides, padding, dilation, threads, runtime), as a key.
        dense_ms: The dense layer (with a bias, as once BN is folded).
        steps: `[first_rank, last_rank, ms]` of the factorized pair (a
            `k x k` conv with r filters then a 1x1 conv, or two Dense),
            covering ranks 1 up to the layer's MAC break-even.
        max_rank: K.
    """

    signature: str
    dense_ms: float
    steps: list[list[float]]
    max_rank: int

    def factorized_ms(self, rank: int) -> float | None:
        """The pair's time at `rank`, or None past the measured ranks."""
        for first, last, ms in self.steps:
            if first <= rank <= last:
                return float(ms)
        return None

    def step_top(self, rank: int) -> int:
        """The largest rank that costs what `rank` costs (the top of its step), or `rank`."""
        for first, last, _ in self.steps:
            if first <= rank <= last:
                return int(last)
        return int(rank)


class LatencyTable:
    """Measured latencies of a model's low-rank layers (see `latency_table`).

    The JSON form (`save`, `load`, `to_dict`) is
    `{"format": "lrpet_tf.latency_table/1", "num_threads": ..., "runtime": ...,
    "model_ms": ..., "layers": {name: {"signature", "dense_ms", "steps",
    "max_rank"}}}`, in milliseconds, `steps` a list of
    `[first_rank, last_rank, ms]`: fill it from measurements on a phone (the
    LiteRT benchmark tool on each layer's two files) to plan for that phone.

    Attributes:
        layers: Layer name -> `LayerLatency`.
        model_ms: The whole dense (BN-folded) model's latency, or None.
        num_threads: Interpreter threads of the measurements.
        runtime: What measured it (e.g. "ai-edge-litert 2.3.0 XNNPACK").
    """

    def __init__(
        self,
        layers: Mapping[str, LayerLatency],
        model_ms: float | None = None,
        num_threads: int = 1,
        runtime: str | None = None,
    ) -> None:
        self.layers = dict(layers)
        self.model_ms = model_ms
        self.num_threads = num_threads
        self.runtime = runtime

    def __contains__(self, name: object) -> bool:
        return name in self.layers

    def require(self, names: Iterable[str], argument: str = "latency_table") -> None:
        """Raises a ValueError naming the layers of `names` the table does not have."""
        missing = [n for n in names if n not in self.layers]
        if missing:
            raise ValueError(
                f"`{argument}` has no measurements of layers {missing}; build it from this "
                "model (lrpet_tf.latency_table(model)) or add them."
            )

    def _layer(self, name):
        self.require([name], "name")
        return self.layers[name]

    def dense_ms(self, name: str) -> float:
        """The dense layer `name`'s time (ms)."""
        return self._layer(name).dense_ms

    def factorized_ms(self, name: str, rank: int) -> float | None:
        """The factorized pair of layer `name` at `rank`, or None past the measured ranks."""
        return self._layer(name).factorized_ms(rank)

    def pays(self, name: str, rank: int) -> bool:
        """Whether the factorized pair at `rank` is measured faster than the dense layer."""
        factorized = self.factorized_ms(name, rank)
        return factorized is not None and factorized < self.dense_ms(name)

    def layer_ms(self, name: str, rank: int) -> float:
        """What layer `name` costs at `rank` once factorized only where it pays."""
        return self.factorized_ms(name, rank) if self.pays(name, rank) else self.dense_ms(name)

    def step_top(self, name: str, rank: int) -> int:
        """The largest rank of layer `name` that costs what `rank` costs."""
        return self._layer(name).step_top(rank)

    def rank_steps(self) -> dict[str, list[tuple[int, int]]]:
        """Layer name -> `[(first, last), ...]`: the staircase alone (for `PruneRatio`)."""
        return {
            n: [(int(a), int(b)) for a, b, _ in layer.steps] for n, layer in self.layers.items()
        }

    def predicted_ms(self, ranks: Mapping[str, int]) -> float:
        """Predicted latency of the model with `ranks` (layer name -> rank).

        The whole dense model's time with each named layer's dense time
        replaced by `layer_ms` (needs `model_ms`).
        """
        if self.model_ms is None:
            raise ValueError("This table has no whole-model latency (model_ms).")
        self.require(ranks, "ranks")
        saved = sum(self.dense_ms(n) - self.layer_ms(n, r) for n, r in ranks.items())
        return self.model_ms - saved

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "num_threads": self.num_threads,
            "runtime": self.runtime,
            "model_ms": self.model_ms,
            "layers": {name: dataclasses.asdict(layer) for name, layer in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        if data.get("format") != _FORMAT:
            raise ValueError(
                f"Expected a latency table of format {_FORMAT!r}. "
                f"Received: format={data.get('format')!r}"
            )
        if not isinstance(data.get("layers"), Mapping):
            raise ValueError(
                'Expected a latency table with a "layers" dict of layer name -> '
                f'{{"signature", "dense_ms", "steps", "max_rank"}}. Received: keys {sorted(data)}'
            )
        layers = {}
        for name, entry in data["layers"].items():
            try:
                layers[name] = LayerLatency(
                    signature=entry["signature"],
                    dense_ms=float(entry["dense_ms"]),
                    steps=[[int(a), int(b), float(ms)] for a, b, ms in entry["steps"]],
                    max_rank=int(entry["max_rank"]),
                )
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f'Expected layers[{name!r}] of the latency table to hold "signature", '
                    '"dense_ms", "steps" as [first_rank, last_rank, ms] rows and "max_rank". '
                    f"Received: {entry!r} ({type(e).__name__}: {e})"
                ) from e
        return cls(layers, data.get("model_ms"), data.get("num_threads", 1), data.get("runtime"))

    def save(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _runtime():
    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return f"ai-edge-litert {version} XNNPACK on {platform.machine()}"


def _default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "lrpet_tf", "latency")


def _signature(layer, input_shape, num_threads):
    config = layer.get_config()
    keep = ("filters", "units", "kernel_size", "strides", "padding", "dilation_rate", "groups")
    fields = {
        "class": type(layer).__name__,
        "input_shape": [None if d is None else int(d) for d in input_shape[1:]],
        "kernel": [int(d) for d in layer.kernel.shape],
        "config": {k: config[k] for k in keep if k in config},
        "threads": num_threads,
        "runtime": _runtime(),
        "cpu": platform.processor() or platform.machine(),
    }
    return json.dumps(fields, sort_keys=True, default=list)


def _single_layer_models(layer, input_shape):
    """`(dense, factorized(rank))`: one-layer Keras models at the layer's input shape."""
    config = dict(layer.get_config(), use_bias=True)
    for key in ("name", "lora_rank", "lora_alpha", "dtype"):
        config.pop(key, None)
    cls = type(layer)

    def dense():
        inputs = keras.Input(tuple(input_shape[1:]))
        return keras.Model(inputs, cls.from_config(dict(config, name="dense"))(inputs))

    def factorized(rank):
        inputs = keras.Input(tuple(input_shape[1:]))
        if isinstance(layer, keras.layers.Dense):
            first = dict(config, units=rank, use_bias=False, activation=None, name="reduce")
            second = dict(config, name="expand")
        else:
            ones = (1,) * len(layer.kernel_size)
            first = dict(config, filters=rank, use_bias=False, activation=None, name="reduce")
            second = dict(
                config,
                kernel_size=ones,
                strides=ones,
                padding="valid",
                dilation_rate=ones,
                name="expand",
            )
        return keras.Model(inputs, cls.from_config(second)(cls.from_config(first)(inputs)))

    return dense, factorized


def _tflite_bytes(model, folder, name):
    path = os.path.join(folder, f"{name}.tflite")
    export_tflite(model, path, verify=False)
    with open(path, "rb") as f:
        return f.read()


def _paired_ms(files, reference, num_threads, rounds, runs):
    """Median per-round ratio of each file's time to `reference`'s, times its median, in ms."""
    times = {name: [] for name in files}
    reference_times = []
    names = list(files)
    for i in range(rounds + 1):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in [None, *order]:
            content = reference if name is None else files[name]
            ms = measure_latency(content, num_threads=num_threads, runs=runs, warmup=3).median_ms
            if i == 0:
                continue  # a warm-up round
            (reference_times if name is None else times[name]).append(ms)
    base = float(np.median(reference_times))
    ratios = {name: np.median(np.divide(t, reference_times)) for name, t in times.items()}
    return base, {name: float(ratio * base) for name, ratio in ratios.items()}


def _floor_model(input_shape):
    """One cheap element-wise op on the layer's input: the interpreter's fixed cost per invoke."""
    inputs = keras.Input(tuple(input_shape[1:]))
    return keras.Model(inputs, keras.layers.Rescaling(2.0, name="floor")(inputs))


def _measure_layer(layer, input_shape, num_threads, rounds, runs, tolerance, log):
    shape = matrix_shape(layer.kernel.shape)
    k = min(shape)
    top = max(1, min(k, math.ceil(break_even_rank(shape))))
    dense, factorized = _single_layer_models(layer, input_shape)
    with tempfile.TemporaryDirectory() as folder:
        reference = _tflite_bytes(dense(), folder, "dense")
        floor = _tflite_bytes(_floor_model(input_shape), folder, "floor")
        base = {}
        measured = {}

        def cost(rank):
            content = _tflite_bytes(factorized(rank), folder, f"r{rank}")
            files = {rank: content, "floor": floor}
            dense_ms, ms = _paired_ms(files, reference, num_threads, rounds, runs)
            base.setdefault("dense", dense_ms)
            base.setdefault("floor", ms["floor"])
            # A layer inside a model does not pay the interpreter's fixed cost
            # per invoke that a one-layer file does: it is subtracted.
            measured[rank] = max(ms[rank] - base["floor"], 1e-6)
            return measured[rank]

        def same(a, b):
            return abs(a - b) <= tolerance * max(a, b)

        steps = find_steps(cost, 1, top, same)
    dense_ms = max(base["dense"] - base["floor"], 1e-6)
    log(
        f"  {layer.name}: dense {dense_ms:.4f} ms (+{base['floor']:.4f} invoke floor), "
        f"{len(steps)} steps over ranks 1-{top} ({len(measured)} ranks timed)"
    )
    return dense_ms, [[a, b, ms] for a, b, ms in steps], k


def latency_table(
    model: keras.Model,
    ranks: dict[str, int] | HasRanks | None = None,
    num_threads: int = 1,
    layer_types: LayerTypes = ("conv", "dense"),
    include: LayerSelector = None,
    exclude: LayerSelector = None,
    cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
    rounds: int = 5,
    runs: int = 20,
    tolerance: float = 0.04,
    model_latency: bool = True,
    verbose: bool = False,
) -> LatencyTable:
    """Measures what each low-rank layer of `model` costs on LiteRT (XNNPACK), dense and factorized.

    For each layer (those of `ranks` if given, else every layer of
    `layer_types` narrowed by `include` / `exclude`), one-layer `.tflite`
    files at the layer's real input shape (batch 1, BN folded as a bias) are
    timed with `measure_latency`, the factorized pair against the dense layer
    in interleaved rounds (the median per-round ratio times the dense
    median), at the ranks where the time steps: `find_steps` over ranks 1 up
    to the MAC break-even, so a staircase costs a few timings, not one per
    rank. The time of a one-op file (the interpreter's fixed cost per invoke,
    which a layer inside a model does not pay) is subtracted. Layers with
    the same signature (shape, kernel, strides, padding,
    dilation, threads, runtime, CPU) are measured once, and each result is
    cached on disk under `cache_dir` by that signature, so a second call on
    the same machine times nothing. With `model_latency`, the whole
    BN-folded dense model is timed too (`model_ms`, for
    `LatencyTable.predicted_ms`).

    Args:
        model: A built Functional or Sequential model with fixed input sizes.
        ranks: Optionally the layers to measure: a dict layer name -> rank,
            or an object with such a `ranks` dict (an LRPET callback after
            `prepare`).
        num_threads: Interpreter threads (1: the usual mobile setting).
        layer_types, include, exclude: Which layers, as for `LRPET`.
        cache_dir: Folder of the cache (default `~/.cache/lrpet_tf/latency`,
            or under `$XDG_CACHE_HOME`); None also means the default, and
            `False` turns the cache off.
        rounds, runs: Interleaved rounds, and `measure_latency` runs per
            sample.
        tolerance: Relative difference below which two ranks' times are one
            step.
        model_latency: Also time the whole dense model.
        verbose: Print a line per layer measured.

    Returns:
        A `LatencyTable`.

    Raises:
        ValueError: For bad arguments or unknown layer names, before timing.

    Example:
        >>> table = lrpet_tf.latency_table(dense_model, exclude=["stem"])
        >>> table.save("resnet20_pixel8.json")
        >>> ranks = lrpet_tf.allocate_ranks(
        ...     dense_model, x, y, cb, cost="latency", latency_table=table
        ... )
    """
    for name, value in (("num_threads", num_threads), ("rounds", rounds), ("runs", runs)):
        check_int(value, name)
    check_number(tolerance, "tolerance", 0, 1, high_open=True)
    graph = LayerGraph(model)
    if ranks is not None:
        names = ranks if isinstance(ranks, dict) else getattr(ranks, "ranks", None)
        if not isinstance(names, dict):
            raise ValueError(
                "Expected `ranks` to be a dict layer name -> rank or an object with one in "
                f"`.ranks`. Received: ranks={ranks!r}"
            )
        by_name = layers_by_name(model)
        check_layer_names(list(names), by_name, "ranks", model.name)
        layers = [by_name[n] for n in names]
    else:
        layers, _ = select_targets(model, layer_types, include, exclude, trainable_only=False)
    shapes = {}
    for g in graph.walk():
        for node in g.nodes:
            shapes.setdefault(id(node.layer), node.input_shape)
    for layer in layers:  # every layer checked before the first timing
        reason = unsupported_reason(layer)
        if reason is not None:
            raise ValueError(f"`ranks` names layer {layer.name!r}, which cannot be timed: {reason}")
        shape = shapes[id(layer)]
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"Layer {layer.name!r} has an input of unknown size {tuple(shape)}: build the "
                "model with a fixed input shape to time it."
            )
    log = print if verbose else (lambda *_: None)
    cache = None if cache_dir is False else (cache_dir or _default_cache_dir())
    if cache:
        os.makedirs(cache, exist_ok=True)
    measured = {}
    entries = {}
    for layer in layers:
        shape = shapes[id(layer)]
        signature = _signature(layer, shape, num_threads)
        key = hashlib.sha256(signature.encode()).hexdigest()[:24]
        path = os.path.join(cache, f"{key}.json") if cache else None
        if key not in measured and path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                measured[key] = json.load(f)
        if key not in measured:
            dense_ms, steps, k = _measure_layer(
                layer, shape, num_threads, rounds, runs, tolerance, log
            )
            measured[key] = {"dense_ms": dense_ms, "steps": steps, "max_rank": k}
            if path:
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(measured[key], f)
        entries[layer.name] = LayerLatency(signature=signature, **measured[key])
    model_ms = None
    if model_latency:
        with tempfile.TemporaryDirectory() as folder:
            content = _tflite_bytes(fold_batchnorm(model), folder, "model")
        model_ms = float(
            np.median(
                [
                    measure_latency(content, num_threads=num_threads, runs=runs).median_ms
                    for _ in range(rounds)
                ]
            )
        )
    return LatencyTable(entries, model_ms, num_threads, _runtime())

"""Measure a .tflite file's inference latency in the LiteRT interpreter."""

import dataclasses
import time

import numpy as np

from lrpet_tf.export.tflite_model import TFLiteModel

__all__ = ["LatencyResult", "measure_latency"]


@dataclasses.dataclass
class LatencyResult:
    """Latency of `batch_size` examples through a .tflite file, in milliseconds.

    Attributes:
        median_ms, mean_ms, p90_ms, min_ms: Statistics over `runs` timed runs.
        runs, warmup, num_threads, batch_size: How it was measured.
        invokes_per_run: `invoke` calls per timed run: 1, or for a file whose
            static batch is smaller than `batch_size`, `batch_size` divided
            by it.
    """

    median_ms: float
    mean_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    warmup: int
    num_threads: int
    batch_size: int
    invokes_per_run: int = 1


def measure_latency(model, num_threads=1, runs=50, warmup=10, batch_size=1, seed=0):
    """Times `invoke` of a .tflite model on random inputs (XNNPACK on CPU).

    Report ratios of two files measured in the same run rather than absolute
    times: shared machines are noisy.

    Args:
        model: Path to a .tflite file or its bytes.
        num_threads: Interpreter threads.
        runs: Timed runs after `warmup` untimed invokes.
        warmup: Untimed invokes first (XNNPACK packs weights on the first).
        batch_size: Examples per timed run. A dynamic-batch file is resized
            to it; a static-batch file (`export_tflite(..., batch_size=B)`)
            runs `batch_size / B` invokes of B examples per timed run.
        seed: Seed of the random inputs.

    Returns:
        A `LatencyResult`.

    Raises:
        ValueError: A bad argument, or a `batch_size` that is not a multiple
            of the file's static batch.
    """
    for name, value, low in (
        ("num_threads", num_threads, 1),
        ("runs", runs, 1),
        ("warmup", warmup, 0),
        ("batch_size", batch_size, 1),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")
    tflite = TFLiteModel(model, num_threads=num_threads)
    static_batch = tflite.batch_size
    invokes = 1
    if static_batch is not None:
        if batch_size % static_batch:
            raise ValueError(
                f"Expected `batch_size` to be a multiple of the file's static batch "
                f"({static_batch}). Received: batch_size={batch_size}. Export with "
                f"export_tflite(..., batch_size={batch_size}), or batch_size=None for a "
                "dynamic batch."
            )
        invokes = batch_size // static_batch
    interpreter = tflite.new_interpreter()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        shape = list(detail["shape_signature"])
        shape[0] = batch_size if static_batch is None else static_batch
        if any(d < 0 for d in shape):
            raise ValueError(f"Input {detail['name']} has an unknown dimension: {shape}")
        if static_batch is None:
            interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        value = rng.standard_normal(detail["shape"]).astype(np.float32)
        if np.issubdtype(detail["dtype"], np.integer):
            limits = np.iinfo(detail["dtype"])
            center = (int(limits.min) + int(limits.max) + 1) // 2
            value = np.clip(np.round(value * 32) + center, limits.min, limits.max)
        interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(invokes):
            interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    times = np.asarray(times)
    return LatencyResult(
        median_ms=float(np.median(times)),
        mean_ms=float(times.mean()),
        p90_ms=float(np.percentile(times, 90)),
        min_ms=float(times.min()),
        runs=runs,
        warmup=warmup,
        num_threads=num_threads,
        batch_size=batch_size,
        invokes_per_run=invokes,
    )

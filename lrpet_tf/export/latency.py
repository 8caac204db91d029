"""Measure a .tflite file's inference latency in the LiteRT interpreter.

`measure_latency` is the one timer of the project: the examples call it, and
the benchmarks build their interleaved comparisons of several files on its
`LatencyTimer` (one interpreter per file, timed round after round).
"""

import dataclasses
import os
import time

import numpy as np

from lrpet_tf.export.tflite_model import TFLiteModel
from lrpet_tf.ops.arguments import check_int

__all__ = ["LatencyResult", "LatencyTimer", "measure_latency"]

# What a timed run's duration is read from.
_CLOCKS = ("wall", "cpu")


@dataclasses.dataclass
class LatencyResult:
    """Latency of `batch_size` examples through a .tflite file, in milliseconds.

    Attributes:
        median_ms, mean_ms, p90_ms, min_ms: Statistics over `runs` timed
            runs, by `clock`.
        runs, warmup, num_threads, batch_size: How it was measured.
        invokes_per_run: `invoke` calls per timed run: 1, or for a file whose
            static batch is smaller than `batch_size`, `batch_size` divided
            by it (times `repeats`).
        repeats: Back-to-back passes over the batch per timed run; a run's
            time is divided by it.
        clock: `"wall"` (elapsed time, `time.perf_counter`) or `"cpu"` (this
            process's CPU time over all its threads, `time.process_time`).
        wall_samples_ms, cpu_samples_ms: Each timed run's time by either
            clock, in order (the statistics are of the one `clock` names).
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
    repeats: int = 1
    clock: str = "wall"
    wall_samples_ms: tuple = dataclasses.field(default=(), repr=False)
    cpu_samples_ms: tuple = dataclasses.field(default=(), repr=False)

    @property
    def samples_ms(self) -> tuple:
        """Each timed run's time by `clock`."""
        return self.cpu_samples_ms if self.clock == "cpu" else self.wall_samples_ms


def _check_counts(**values):
    """ValueError unless every value is an int >= its bound (`name=(value, low)`)."""
    for name, (value, low) in values.items():
        check_int(value, name, low)


def _check_clock(clock):
    if clock not in _CLOCKS:
        raise ValueError(f"Expected `clock` in {_CLOCKS}. Received: clock={clock!r}")


class LatencyTimer:
    """A .tflite file loaded once in the LiteRT interpreter, ready to be timed.

    The interpreter (XNNPACK on CPU) gets random inputs once; each `measure`
    call then runs untimed warm-up invokes and times `runs` runs of
    `batch_size` examples each. `measure_latency(model, ...)` is
    `LatencyTimer(model, ...).measure(...)`; keep the timer instead to time a
    file again without reloading it, e.g. several files round by round.

    Args:
        model: Path to a .tflite file or its bytes.
        num_threads: Interpreter threads.
        batch_size: Examples per timed run. A dynamic-batch file is resized
            to it; a static-batch file (`export_tflite(..., batch_size=B)`)
            runs `batch_size / B` invokes of B examples per run.
        seed: Seed of the random inputs (standard normal; for an integer
            input, quantized around the middle of its range).

    Raises:
        ValueError: A bad argument, or a `batch_size` that is not a multiple
            of the file's static batch.

    Example:
        >>> timers = {n: LatencyTimer(p) for n, p in {"dense": a, "compact": b}.items()}
        >>> for _ in range(20):  # interleaved: the load's drift hits both alike
        ...     times = {n: t.measure(runs=1, warmup=1).median_ms for n, t in timers.items()}
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        num_threads: int = 1,
        batch_size: int = 1,
        seed: int = 0,
    ) -> None:
        _check_counts(num_threads=(num_threads, 1), batch_size=(batch_size, 1))
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
        self.num_threads = int(num_threads)
        self.batch_size = int(batch_size)
        self.invokes_per_batch = invokes
        self._interpreter = interpreter

    def measure(
        self, runs: int = 50, warmup: int = 10, repeats: int = 1, clock: str = "wall"
    ) -> LatencyResult:
        """Runs `warmup` untimed invokes, then times `runs` runs.

        Args:
            runs: Timed runs.
            warmup: Untimed invokes first (XNNPACK packs the weights on the
                file's first invoke; later ones re-warm the caches).
            repeats: Back-to-back batches per timed run, whose time is
                divided by it: for files so fast that one batch is near the
                timer's resolution.
            clock: What the statistics are of: `"wall"` (elapsed time) or
                `"cpu"` (this process's CPU time, all threads). With one
                thread XNNPACK runs on the calling thread, so CPU time leaves
                out the time slices other processes took on a loaded machine;
                with more it adds up the threads. Both are recorded.

        Returns:
            A `LatencyResult`.

        Raises:
            ValueError: A bad argument.
        """
        _check_counts(runs=(runs, 1), warmup=(warmup, 0), repeats=(repeats, 1))
        _check_clock(clock)
        invoke = self._interpreter.invoke
        for _ in range(warmup):
            invoke()
        calls = repeats * self.invokes_per_batch
        wall, cpu = [], []
        for _ in range(runs):
            start_cpu = time.process_time()
            start = time.perf_counter()
            for _ in range(calls):
                invoke()
            wall.append((time.perf_counter() - start) * 1e3 / repeats)
            cpu.append((time.process_time() - start_cpu) * 1e3 / repeats)
        times = np.asarray(cpu if clock == "cpu" else wall)
        return LatencyResult(
            median_ms=float(np.median(times)),
            mean_ms=float(times.mean()),
            p90_ms=float(np.percentile(times, 90)),
            min_ms=float(times.min()),
            runs=runs,
            warmup=warmup,
            num_threads=self.num_threads,
            batch_size=self.batch_size,
            invokes_per_run=calls,
            repeats=repeats,
            clock=clock,
            wall_samples_ms=tuple(wall),
            cpu_samples_ms=tuple(cpu),
        )


def measure_latency(
    model: str | os.PathLike | bytes,
    num_threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
    batch_size: int = 1,
    seed: int = 0,
    repeats: int = 1,
    clock: str = "wall",
) -> LatencyResult:
    """Times `invoke` of a .tflite model on random inputs (XNNPACK on CPU).

    Report ratios of two files measured in the same run rather than absolute
    times: shared machines are noisy. To compare files, time them round by
    round with one `LatencyTimer` each (see benchmarks/bench_utils.py's
    `interleaved_latency`).

    Args:
        model: Path to a .tflite file or its bytes.
        num_threads: Interpreter threads.
        runs: Timed runs after `warmup` untimed invokes.
        warmup: Untimed invokes first (XNNPACK packs weights on the first).
        batch_size: Examples per timed run. A dynamic-batch file is resized
            to it; a static-batch file (`export_tflite(..., batch_size=B)`)
            runs `batch_size / B` invokes of B examples per timed run.
        seed: Seed of the random inputs.
        repeats: Back-to-back runs per timed sample, its time divided by it.
        clock: `"wall"` (elapsed time, the default) or `"cpu"` (this
            process's CPU time; see `LatencyTimer.measure`).

    Returns:
        A `LatencyResult`.

    Raises:
        ValueError: A bad argument, or a `batch_size` that is not a multiple
            of the file's static batch.
    """
    _check_counts(
        num_threads=(num_threads, 1),
        runs=(runs, 1),
        warmup=(warmup, 0),
        batch_size=(batch_size, 1),
        repeats=(repeats, 1),
    )
    _check_clock(clock)
    timer = LatencyTimer(model, num_threads=num_threads, batch_size=batch_size, seed=seed)
    return timer.measure(runs=runs, warmup=warmup, repeats=repeats, clock=clock)

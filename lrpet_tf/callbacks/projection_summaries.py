"""TensorBoard summaries of LRPET projections."""

import numpy as np
import tensorflow as tf

__all__ = ["ProjectionSummaries"]


class ProjectionSummaries:
    """Writes what each projection did to a TensorBoard log directory.

    Per projection (at the optimizer step it happened) and per layer:
    `lrpet/energy_kept/<layer>` (energy in the top-r singular values before
    transfer), `lrpet/rank/<layer>`, and a histogram
    `lrpet/singular_values/<layer>` of the (BN-merged) kernel's spectrum; and
    `lrpet/energy_kept_mean` over layers.

    Args:
        log_dir: Folder for the event files (e.g. the one given to
            `keras.callbacks.TensorBoard`; a `lrpet` subfolder is used).

    Raises:
        ImportError: If the `tensorboard` package (which implements
            `tf.summary`) is not installed.
    """

    def __init__(self, log_dir):
        try:
            import tensorboard  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "LRPET(log_dir=...) writes TensorBoard summaries, which need the "
                "`tensorboard` package: `pip install lrpet_tf[tensorboard]`. "
                f"Received: log_dir={log_dir!r}"
            ) from e
        self.log_dir = log_dir
        self._writer = None

    def write(self, stats, step):
        """Writes one `ProjectionStats` at `step`."""
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(f"{self.log_dir}/lrpet")
        with self._writer.as_default(step=int(step)):
            for name, energy in stats.energy_kept.items():
                tf.summary.scalar(f"lrpet/energy_kept/{name}", energy)
                tf.summary.scalar(f"lrpet/rank/{name}", stats.ranks[name])
                tf.summary.histogram(
                    f"lrpet/singular_values/{name}", np.asarray(stats.singular_values[name])
                )
            if stats.energy_kept:
                tf.summary.scalar(
                    "lrpet/energy_kept_mean", float(np.mean(list(stats.energy_kept.values())))
                )
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

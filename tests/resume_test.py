"""An interrupted LRPET run resumes its projection schedule exactly.

The uninterrupted run and the interrupted-then-resumed run use the same seed
and data order (shuffle=False), so their final weights must be equal.
"""

import numpy as np
import pytest
import testing_models as tm

import lrpet_tf
from lrpet_tf._keras import keras

EPOCHS = 4
STEPS = 4


class Interrupt(keras.callbacks.Callback):
    """Raises at the start of `epoch`, as a preempted job would die."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("preempted")


def new_model():
    keras.utils.set_random_seed(0)
    return tm.compile_for_test(tm.randomize_batchnorm(tm.residual_cnn()), lr=0.05)


def fit(model, callbacks, epochs=EPOCHS, **kwargs):
    x, y = tm.classification_data(16 * STEPS)
    return model.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, callbacks=callbacks, verbose=0, **kwargs
    )


def lrpet(frequency, ramp_epochs=0):
    return lrpet_tf.LRPET(prune_ratio=0.5, frequency=frequency, ramp_epochs=ramp_epochs, verbose=0)


def assert_same_weights(a, b):
    for x, y in zip(tm.all_weights(a), tm.all_weights(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("frequency", ["epoch", 3])
@pytest.mark.parametrize("ramp_epochs", [0, 3])
def test_backup_and_restore_resumes_the_schedule(frequency, ramp_epochs, tmp_path):
    reference = new_model()
    cb = lrpet(frequency, ramp_epochs)
    fit(reference, [cb])

    interrupted = new_model()
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="preempted"):
        fit(
            interrupted,
            [keras.callbacks.BackupAndRestore(backup), lrpet(frequency, ramp_epochs), Interrupt(2)],
        )
    resumed = new_model()
    cb_resumed = lrpet(frequency, ramp_epochs)
    history = fit(resumed, [keras.callbacks.BackupAndRestore(backup), cb_resumed])
    assert len(history.history["loss"]) == EPOCHS - 2  # it did resume, at epoch 2
    assert_same_weights(resumed, reference)
    for name, rank in cb.ranks.items():
        k = resumed.get_layer(name).kernel.numpy()
        assert np.linalg.matrix_rank(k.reshape(-1, k.shape[-1]).astype(np.float64), 1e-5) <= rank


@pytest.mark.parametrize("ramp_epochs", [0, 3])
def test_saved_model_and_initial_epoch_resume(ramp_epochs, tmp_path):
    reference = new_model()
    cb = lrpet("epoch", ramp_epochs)
    fit(reference, [cb])

    first = new_model()
    fit(first, [lrpet("epoch", ramp_epochs)], epochs=2)
    path = str(tmp_path / "mid_run.keras")
    first.save(path)
    loaded = keras.models.load_model(path)
    cb_resumed = lrpet("epoch", ramp_epochs)
    fit(loaded, [cb_resumed], initial_epoch=2)
    assert_same_weights(loaded, reference)
    assert cb_resumed.current_ranks == cb.current_ranks == cb.ranks

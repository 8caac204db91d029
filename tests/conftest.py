"""Shared pytest setup: quiet TensorFlow, fixed seeds, the `slow` and `keras_independent` marks."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One BLAS thread per process (set before NumPy loads OpenBLAS; subprocesses
# inherit it). `-n 2` already gives each worker one of the two cores, and
# OpenBLAS's spinning threads otherwise fight the other worker's: on a loaded
# 2-core machine np.linalg.svd of a 960x320 matrix took 3.5 s instead of 0.015 s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lrpet_tf import _keras  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Runs `keras_independent` tests once: in Keras 3 mode, not again under tf_keras.

    The README runs the suite twice, once per Keras; a test that touches no
    Keras (NumPy/TF ops, source scans, committed files, subprocesses that
    import only TensorFlow) gives the same result both times.
    """
    if _keras.IS_KERAS_3:
        return
    skip = pytest.mark.skip(reason="touches no Keras: runs in the Keras 3 pass of the suite")
    for item in items:
        if item.get_closest_marker("keras_independent"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    # Keras 3's own test base does this: a fresh graph and name scope per test
    # without a garbage collection each time (most of a fast test's time).
    if keras.__version__.startswith("3."):
        keras.backend.clear_session(free_memory=False)
    else:
        keras.backend.clear_session()

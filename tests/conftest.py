"""Shared pytest setup: quiet TensorFlow, fixed seeds, the `slow` marker."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lrpet_tf._keras import keras  # noqa: E402


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

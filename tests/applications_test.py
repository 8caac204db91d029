"""keras.applications models through every rewrite (see benchmarks/applications_report.py).

MobileNetV2 runs in the default suite; the other architectures are marked
slow (each takes a minute or more on 2 cores): `pytest -m slow tests/applications_test.py`.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import applications_report  # noqa: E402

SLOW = [name for name in applications_report.ARCHITECTURES if name != "MobileNetV2"]


@pytest.mark.parametrize(
    "name", ["MobileNetV2"] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]
)
def test_application_rewrites(name, tmp_path):
    r = applications_report.check_application(name, output_dir=str(tmp_path))
    assert r["ranks_ok"] and r["projected_layers"] > 0 and r["factorized"] > 0
    assert r["output_scale"] > 1e-2  # calibrated BN: the errors below are meaningful
    for key in ("factorize_error", "fold_error", "decompose_error", "prune_error"):
        assert r[key] < 1e-9, (key, r[key])  # float64: exact up to round-off
    # float32 TFLite: the factorized file is as faithful as the dense one.
    assert r["tflite_error_compact"] <= 2 * r["tflite_error_dense"] + 1e-5
    dense_convs, compact_convs = r["tflite_conv_ops"]
    assert compact_convs == dense_convs + r["factorized"] - _factorized_dense(name, r)
    assert r["macs_report_consistent"] and r["params_match_keras"]
    assert r["macs_after"] < 0.8 * r["macs_before"]
    assert (tmp_path / f"{name}_compact.tflite").exists()


def _factorized_dense(name, r):
    """Factorized Dense layers become FULLY_CONNECTED ops, not CONV_2D (none here)."""
    return 0

"""keras.applications models through every rewrite (see benchmarks/applications_report.py).

MobileNetV2 runs in the default suite; the other architectures are marked
slow (each takes a minute or more on 2 cores): `pytest -m slow tests/applications_test.py`.
"""

import json
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


def test_report_resumes_from_its_one_file(tmp_path, monkeypatch):
    """A model already in applications.json (same g) is not run again; others are added."""
    entry = {
        "model": "MobileNetV2", "input_size": 32, "projected_layers": 35, "bn_rectified": 35,
        "factorized": 35, "kept_dense": 0, "bn_folded": 52, "bn_left": 0,
        "factorize_error": 2.6e-11, "fold_error": 2.8e-11, "decompose_error": 2.9e-11,
        "prune_error": 2.6e-11, "tflite_error_dense": 9.7e-4, "tflite_error_compact": 8.3e-4,
        "tflite_conv_ops": [35, 70], "tflite_bytes": [8_900_000, 5_600_000],
        "macs_before": 6_124_928, "macs_after": 3_909_760, "params_before": 2_270_794,
        "params_after": 1_384_905, "prune_ratio": 0.5,
    }  # fmt: skip
    (tmp_path / "applications.json").write_text(json.dumps([entry]))
    ran = []

    def check(name, input_size, prune_ratio):
        ran.append((name, prune_ratio))
        return dict(entry, model=name)

    monkeypatch.setattr(applications_report, "check_application", check)
    rows = applications_report.run(["MobileNetV2", "VGG16"], output_dir=str(tmp_path))
    assert ran == [("VGG16", 0.5)]
    assert [r["model"] for r in rows] == ["MobileNetV2", "VGG16"]
    assert json.loads((tmp_path / "applications.json").read_text()) == rows
    table = (tmp_path / "applications.md").read_text()
    assert "| MobileNetV2 | 32x32 | 35 (35) |" in table and "| 1.57x |" in table
    applications_report.run(["MobileNetV2"], prune_ratio=0.25, output_dir=str(tmp_path))
    assert ran[-1] == ("MobileNetV2", 0.25)  # another g: measured again, in place
    stored = json.loads((tmp_path / "applications.json").read_text())
    assert [r["model"] for r in stored] == ["MobileNetV2", "VGG16"]

"""Each example script runs end to end on tiny data."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import quickstart  # noqa: E402


def test_quickstart_run_writes_models_and_table(tmp_path, capsys):
    results = quickstart.run(
        prune_ratio=0.6, epochs=2, width=8, output_dir=str(tmp_path), verbose=0
    )
    out = capsys.readouterr().out
    assert "LRPET compact" in out and "fewer conv MACs" in out
    for name in ("dense.tflite", "compact.tflite", "dense.keras", "compact.keras", "results.json"):
        assert (tmp_path / name).exists(), name
    dense, compact = results["models"]["dense"], results["models"]["compact"]
    assert compact["conv_macs"] * 2 <= dense["conv_macs"]
    assert compact["tflite_max_error"] < 1e-4 and dense["tflite_max_error"] < 1e-4
    # The .tflite and Keras compact models classify the test set identically.
    assert compact["tflite_accuracy"] == pytest.approx(compact["accuracy"], abs=1e-9)
    assert compact["conv2d_ops"] == 2 * dense["conv2d_ops"]
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["ranks"] == results["ranks"]


def test_quickstart_script_flags(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "quickstart.py"),
            "--epochs=1",
            "--width=4",
            "--verbose=0",
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max |TFLite-Keras|" in proc.stdout
    assert (tmp_path / "compact.tflite").exists()


def test_every_script_and_benchmark_imports_next_to_the_others():
    # Scripts define their absl flags only when run as scripts; a module that
    # defined them at import broke any process importing two of them (pytest
    # workers) with DuplicateFlagError.
    modules = sorted(
        os.path.splitext(name)[0]
        for folder in ("examples", "benchmarks")
        for name in os.listdir(os.path.join(ROOT, folder))
        if name.endswith(".py") and not name.startswith("_")
    )
    code = (
        "import sys; sys.path[:0] = [{!r}, {!r}]; ".format(
            os.path.join(ROOT, "examples"), os.path.join(ROOT, "benchmarks")
        )
        + "; ".join(f"import {module}" for module in modules)
        + "; from absl import flags; print(len(list(flags.FLAGS)))"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(modules) >= 20, modules

"""What the example scripts print: a quiet start, stage headers, honest report rows.

* TensorFlow's start-up lines are kept off the console unless `--tf_logs`.
* train_svd.py, run as a script, prints its five stage headers in order and
  the time per stage, and no "retracing" warning (it evaluates five models).
* Every row of train_lrpet's report describes one model: the params, MACs
  and bytes of the file the row names, as `lrpet_tf.model_report` counts
  them; the dense baseline's summary line claims no compression.
* spectra.png of an LRPET run starts from the spectra before the first
  projection.

Nothing here asserts a time.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import example_console  # noqa: E402
import train_lrpet  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

TINY = dict(dataset="digits", train_limit=192, test_limit=96, width=4, verbose=0, validate=False)
# A C++ log line names its source file: "I0000 ... port.cc:153] ...".
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} .*\.cc:\d+\]", re.MULTILINE)


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=ROOT, **changes)
    return env


def _start_tensorflow(args, **env):
    """Runs the quiet start-up with `args` as the command line, in a new process."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'examples')!r}); "
        "import example_console, logging, os; "
        f"example_console.quiet_tensorflow_startup(['script'] + {list(args)!r}); "
        "import tensorflow as tf; tf.constant(1.0); "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], logging.getLogger('tensorflow').level)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(**env), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _locations(stderr):
    """The source locations (`port.cc:153`) of the C++ log lines in `stderr`."""
    return sorted(set(re.findall(r"(\w+\.cc:\d+)\]", stderr)))


@pytest.mark.keras_independent
def test_the_tf_logs_flag_is_read_as_absl_reads_it():
    wants = example_console.wants_tf_logs
    assert not wants(["script"]) and not wants(["script", "--epochs=2"])
    assert wants(["script", "--tf_logs"]) and wants(["script", "-tf_logs"])
    assert wants(["script", "--tf_logs=true"]) and wants(["script", "--tf_logs=1"])
    assert not wants(["script", "--tf_logs=false"]) and not wants(["script", "--notf_logs"])
    assert not wants(["script", "--tf_logs", "--notf_logs"])
    assert not wants(["script", "--", "--tf_logs"])  # after "--": not a flag


@pytest.mark.keras_independent
def test_quiet_start_hides_tensorflows_startup_lines_and_tf_logs_shows_them():
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tensorflow as tf; tf.config.list_physical_devices(); tf.constant(1.0)",
        ],
        env=_env(TF_CPP_MIN_LOG_LEVEL="0"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    quiet = _start_tensorflow([])
    assert not CPP_LOG_LINE.search(quiet.stderr), quiet.stderr
    assert not any(m in quiet.stderr for m in example_console.STARTUP_MESSAGES), quiet.stderr
    assert quiet.stdout.split() == ["2", "30"]  # C++ errors only; the Python logger at WARNING
    loud = _start_tensorflow(["--tf_logs"])
    assert _locations(loud.stderr) == _locations(plain.stderr)
    assert "found no GPU" not in loud.stderr
    assert loud.stdout.split() == ["0", "0"]  # everything, the logger untouched
    # A level the user set is kept.
    assert _start_tensorflow([], TF_CPP_MIN_LOG_LEVEL="3").stdout.split()[0] == "3"


def test_train_svd_script_prints_its_stages_in_order_and_no_retracing(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "train_svd.py"),
            "--train_limit=192",  # all 360 test images: two batches per evaluation
            "--width=4",
            "--decomposed_epochs=1",
            "--sparsity_epochs=2",
            "--finetune_epochs=1",
            "--verbose=0",
            "--novalidate",
            "--noplots",
            f"--output_dir={tmp_path}",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    headers = re.findall(r"^stage (\d)/(\d): (.*)$", out, re.MULTILINE)
    assert headers == [
        ("1", "5", "decomposed training, 1 epoch"),
        ("2", "5", "sparsity training, 2 epochs"),
        ("3", "5", "pruning at energy 0.05"),
        ("4", "5", "fine-tuning, 1 epoch"),
        ("5", "5", "factorize, fold BN, export and evaluate, 1 .tflite file (float32)"),
    ]
    assert re.search(r"^  \[1/1\] compact_float32\.tflite: convert, verify", out, re.MULTILINE)
    summary = out[out.index("Time per stage:") :].splitlines()
    rows = [line.split("  ")[0] for line in summary[3:]]
    assert rows == [
        "1/5 decomposed training",
        "2/5 sparsity training",
        "3/5 pruning at energy 0.05",
        "4/5 fine-tuning",
        "5/5 factorize, fold BN, export and evaluate",
        "total",
    ]
    assert out.index("stage 5/5") < out.index("Ranks per layer:") < out.index("Time per stage:")
    assert "retracing" not in (out + proc.stderr).lower()
    assert not CPP_LOG_LINE.search(proc.stderr), proc.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert [row["status"] for row in results["stage_times"]] == ["run"] * 5


def _report_rows(text):
    """Label -> [accuracy, params, MACs, bytes, max error] of the summary table of report.txt."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("model  "))
    rows = {}
    for line in lines[start + 2 :]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 6:
            break
        rows[cells[0]] = cells[1:]
    return rows, lines[start + 2 + len(rows)]


def _number(cell):
    return int(cell.replace(",", ""))


def _check_rows_against_files(run_dir, rows):
    """Each row's params, MACs and bytes are those of the model in the file it names."""
    compact = keras.models.load_model(os.path.join(run_dir, "compact.keras"))
    folded = lrpet_tf.model_report(lrpet_tf.fold_batchnorm(compact))
    for label, (_, params, macs, size, _) in rows.items():
        name = label.split(" ")[0]
        path = os.path.join(run_dir, name)
        if name.endswith(".keras"):
            report = lrpet_tf.model_report(keras.models.load_model(path))
        else:
            assert name.endswith(".tflite") and label.endswith("(BN folded)"), label
            report = folded  # the file holds the compact model with BN folded
        assert (_number(params), _number(macs)) == (report.total_params, report.total_macs), label
        assert _number(size) == os.path.getsize(path), label


def test_report_rows_describe_the_saved_files(tmp_path, capsys, caplog):
    lrpet_dir, dense_dir = tmp_path / "lrpet", tmp_path / "dense"
    lrpet = train_lrpet.run(
        epochs=2, prune_ratio=0.5, quantization=("float16",), output_dir=str(lrpet_dir), **TINY
    )
    out = capsys.readouterr().out
    assert re.findall(r"^stage \d/\d: .*$", out, re.MULTILINE) == [
        "stage 1/2: LRPET training, 2 epochs",
        "stage 2/2: factorize, fold BN, export and evaluate, 2 .tflite files (float32, float16)",
    ]
    rows, summary = _report_rows((lrpet_dir / "report.txt").read_text())
    assert list(rows) == [
        "trained.keras (dense-projected)",
        "compact.keras (factorized)",
        "compact_float32.tflite (BN folded)",
        "compact_float16.tflite (BN folded)",
    ]
    _check_rows_against_files(lrpet_dir, rows)
    # The summary compares the BN-folded dense and compact models.
    trained = keras.models.load_model(lrpet_dir / "trained.keras")
    dense_params = lrpet_tf.model_report(lrpet_tf.fold_batchnorm(trained)).total_params
    compact_params = _number(rows["compact_float32.tflite (BN folded)"][1])
    assert f"{dense_params / compact_params:.2f}x fewer params" in summary
    assert lrpet["params_ratio"] == pytest.approx(dense_params / compact_params)
    # spectra.png starts from the spectra the first projection cut.
    assert os.path.exists(lrpet["plots"]["spectra"])
    with open(lrpet_dir / "first_projection.json") as f:
        first = json.load(f)
    assert first["epoch"] == 1 and first["ranks"] == lrpet["ranks"]
    for name, values in first["singular_values"].items():
        kernel_shape = trained.get_layer(name).kernel.shape
        assert len(values) == min(int(np.prod(kernel_shape[:-1])), kernel_shape[-1])
        # Before the first projection the kernel had more than r singular values.
        assert sum(v > 1e-3 * values[0] for v in values) > lrpet["ranks"][name]

    dense = train_lrpet.run(method="dense", epochs=1, output_dir=str(dense_dir), **TINY)
    rows, summary = _report_rows((dense_dir / "report.txt").read_text())
    assert list(rows) == ["trained.keras (dense)", "compact_float32.tflite (BN folded)"]
    _check_rows_against_files(dense_dir, rows)
    assert summary.startswith("dense baseline, nothing compressed: ") and "fewer" not in summary
    assert dense["params_ratio"] == 1.0 and dense["macs_ratio"] == 1.0
    assert "retracing" not in caplog.text.lower()

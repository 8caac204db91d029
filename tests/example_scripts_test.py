"""The example scripts (train_lrpet, train_svd, compress, export_tflite) end to end.

Each runs on tiny data (synthetic 8x8 images or a slice of digits, 1-2
epochs, 4-8 filters) through its importable `run`, and train_lrpet once
through its absl `main` as a script. Interrupted runs are resumed with the
same output folder.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import compress  # noqa: E402
import example_data  # noqa: E402
import example_flags  # noqa: E402
import example_models  # noqa: E402
import example_recipes  # noqa: E402
import example_training  # noqa: E402
import export_tflite  # noqa: E402
import train_lrpet  # noqa: E402
import train_svd  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402
from lrpet_tf._keras import keras  # noqa: E402

TINY = dict(dataset="digits", train_limit=192, test_limit=96, width=4, verbose=0, validate=False)


class Interrupted(Exception):
    """Raised by `StopAfter` to simulate a killed run."""


class StopAfter(keras.callbacks.Callback):
    """Stops the `fit_number`-th fit after its epoch `epoch` (after the backup)."""

    def __init__(self, epoch=0, fit_number=1):
        super().__init__()
        self.epoch, self.fit_number, self.fits = epoch, fit_number, 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.fits == self.fit_number and epoch == self.epoch:
            raise Interrupted(f"stopped after epoch {epoch}")


def _tags(log_dir):
    tags = set()
    for root, _, files in os.walk(log_dir):
        for name in files:
            if "tfevents" in name:
                for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                    tags.update(v.tag for v in event.summary.value)
    return tags


def _matrix_rank(kernel):
    matrix = np.asarray(kernel).reshape(-1, kernel.shape[-1])
    return int(np.linalg.matrix_rank(matrix, tol=1e-4 * np.linalg.norm(matrix, 2)))


def _expected_rank(kernel_shape, prune_ratio):
    k = min(int(np.prod(kernel_shape[:-1])), kernel_shape[-1])
    return max(1, int(k - k * prune_ratio))


def test_train_lrpet_run_writes_everything(tmp_path):
    log_dir = str(tmp_path / "tb")
    config = train_lrpet.TrainConfig(
        epochs=1,
        prune_ratio=0.5,
        exclude=(),  # every conv, the 1-channel stem included (the paper's setting)
        quantization=("float16",),
        output_dir=str(tmp_path / "run"),
        log_dir=log_dir,
        **TINY,
    )
    results = train_lrpet.run(config)
    run_dir = tmp_path / "run"
    for name in (
        "trained.keras",
        "compact.keras",
        "compact_float32.tflite",
        "compact_float16.tflite",
        "results.json",
        "report.txt",
        "history.csv",
        "config.json",
        "spectra.png",
        "ranks.png",
    ):
        assert (run_dir / name).exists(), name
    # Every conv was projected to r = int(K - K*g), and the trained kernels have that rank.
    trained = keras.models.load_model(run_dir / "trained.keras")
    convs = [layer for layer in trained.layers if isinstance(layer, keras.layers.Conv2D)]
    assert set(results["ranks"]) == {layer.name for layer in convs}
    for layer in convs:
        rank = results["ranks"][layer.name]
        assert rank == _expected_rank(layer.kernel.shape, 0.5)
        assert _matrix_rank(layer.kernel.numpy()) <= rank
    assert results["macs_ratio"] > 1.5 and results["conv_macs_ratio"] > 1.5
    assert results["costs"]["compact"]["macs"] < results["costs"]["trained"]["macs"]
    float32 = results["tflite"]["float32"]
    assert float32["verified"] and float32["max_error"] < 1e-4
    assert float32["conv2d_ops"] == 2 * len(convs)  # each conv is two CONV_2D ops
    assert results["tflite"]["float16"]["verified"]
    assert results["accuracy"]["tflite_float32"] == pytest.approx(results["accuracy"]["compact"])
    assert results["accuracy"]["compact"] == pytest.approx(results["accuracy"]["trained"], abs=0.02)
    assert len(results["history"]) == 1 and results["projections"] >= 1
    with open(run_dir / "results.json") as f:
        saved = json.load(f)
    assert saved["ranks"] == results["ranks"] and saved["dataset"]["train"] == 192
    assert "accuracy change" in (run_dir / "report.txt").read_text()
    tags = _tags(log_dir)
    assert {"lrpet/rank/stem", "lrpet/energy_kept/stem", "lrpet/singular_values/stem"} <= tags
    assert "epoch_accuracy" in tags


def test_train_lrpet_resumes_an_interrupted_run(tmp_path):
    config = train_lrpet.TrainConfig(
        epochs=2, prune_ratio=0.5, output_dir=str(tmp_path), plots=False, **TINY
    )
    with pytest.raises(Interrupted):
        train_lrpet.run(config, callbacks=[StopAfter(epoch=0)])
    assert (tmp_path / "backup").exists() and not (tmp_path / "trained.keras").exists()
    results = train_lrpet.run(config)
    assert results["epochs_run"] == 1  # only the second epoch ran again
    assert [row["epoch"] for row in results["history"]] == [0.0, 1.0]
    assert not results["resumed"] and not (tmp_path / "backup").exists()
    again = train_lrpet.run(config)  # finished: reused, not retrained
    assert again["resumed"] and again["epochs_run"] == 0
    assert again["ranks"] == results["ranks"]
    assert again["accuracy"]["compact"] == pytest.approx(results["accuracy"]["compact"])


def test_sweep_and_methods_at_equal_compression(tmp_path):
    config = train_lrpet.TrainConfig(
        dataset="synthetic",
        width=4,
        epochs=1,
        verbose=0,
        plots=False,
        validate=False,
        output_dir=str(tmp_path),
    )
    summary = train_lrpet.sweep(config, prune_ratios=(0.3, 0.6))
    assert os.path.exists(summary["plot"]) and (tmp_path / "sweep.json").exists()
    macs = [p["macs"] for p in summary["points"]]
    assert macs[1] < macs[0] < summary["baseline"]["macs"]
    dense, _, lrpet = summary["runs"]
    assert dense["ranks"] == {} and dense["conv_macs_ratio"] == pytest.approx(1.0)
    assert lrpet["config"]["prune_ratio"] == 0.6 and lrpet["macs_ratio"] > 1.5
    # Compact-from-scratch: the same ranks and the same compact model size.
    scratch = train_lrpet.run(
        config, method="scratch", prune_ratio=0.6, output_dir=str(tmp_path / "scratch")
    )
    assert scratch["ranks"] == lrpet["ranks"]
    assert scratch["costs"]["compact"]["macs"] == lrpet["costs"]["compact"]["macs"]
    for results in (dense, lrpet, scratch):
        assert results["tflite"]["float32"]["max_error"] < 1e-4


def test_train_lrpet_script_preset_and_flags(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "train_lrpet.py"),
            "--preset=lrpet_resnet56_cifar10",  # g=0.57, 400 epochs, cifar10 ...
            "--model=resnet20",  # ... overridden by the flags given
            "--dataset=synthetic",
            "--width=4",
            "--epochs=1",
            "--batch_size=64",
            "--verbose=0",
            "--noplots",
            "--novalidate",
            "--exclude=conv1",  # the stem stays dense
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max |TFLite-Keras|" in proc.stdout
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert config["prune_ratio"] == 0.57 and config["lr_steps"] == [0.5, 0.75]
    assert config["epochs"] == 1 and config["model"] == "resnet20"
    assert config["exclude"] == ["conv1"]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert len(results["ranks"]) == 18 and "conv1" not in results["ranks"]  # 19 convs but the stem
    assert results["tflite"]["float32"]["max_error"] < 1e-4
    trained = keras.models.load_model(tmp_path / "trained.keras")
    for name, rank in results["ranks"].items():
        assert rank == _expected_rank(trained.get_layer(name).kernel.shape, 0.57)
    # The stem was not projected (full rank 3*3*3=27 > its 4 filters: rank 4) nor factorized.
    assert _matrix_rank(trained.get_layer("conv1").kernel.numpy()) == 4
    compact = keras.models.load_model(tmp_path / "compact.keras")
    assert isinstance(compact.get_layer("conv1"), keras.layers.Conv2D)
    assert train_lrpet.TrainConfig(exclude=("conv1",)).run_name().endswith("_g0.6_no-conv1")


def test_train_lrpet_defaults_leave_a_small_stem_dense_and_ramp_and_recalibrate(tmp_path):
    # digits: small_cnn's first conv sees 1 channel (K = 9): "auto" leaves it dense.
    config = train_lrpet.TrainConfig(
        epochs=2,
        ramp_epochs=2,
        recalibrate_bn=True,
        prune_ratio=0.75,
        plots=False,
        output_dir=str(tmp_path / "run"),
        **TINY,
    )
    results = train_lrpet.run(config)
    model = example_models.build_model("small_cnn", (8, 8, 1), 10, 4)
    stem = model.layers[1].name
    assert config.excluded_layers(model) == (stem,)
    assert stem not in results["ranks"] and len(results["ranks"]) >= 2
    bns = [
        layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert set(results["recalibration"]) == set(bns) and bns
    trained = keras.models.load_model(tmp_path / "run" / "trained.keras")
    for name, rank in results["ranks"].items():  # the ramp ended at the target ranks
        assert _matrix_rank(trained.get_layer(name).kernel.numpy()) <= rank
    # The papers' presets keep every conv projected.
    preset = example_flags.example_presets.get_preset("lrpet_resnet56_cifar10")
    assert preset.settings["exclude"] == ()


def test_train_svd_runs_stages_and_resumes(tmp_path):
    log_dir = str(tmp_path / "tb")
    config = train_svd.SVDConfig(
        decomposed_epochs=1,
        sparsity_epochs=2,
        finetune_epochs=1,
        energy=0.05,
        output_dir=str(tmp_path / "run"),
        log_dir=log_dir,
        **TINY,
    )
    # Killed during stage 2 (sparsity), after its first epoch.
    with pytest.raises(Interrupted):
        train_svd.run(config, callbacks=[StopAfter(epoch=0, fit_number=2)])
    run_dir = tmp_path / "run"
    assert (run_dir / "stage1_decomposed.keras").exists()
    assert not (run_dir / "stage2_sparsity.keras").exists()
    results = train_svd.run(config)
    stages = results["stages"]
    assert stages["decomposed"] == {"status": "skipped", "epochs_run": 0}
    assert stages["sparsity"] == {"status": "run", "epochs_run": 1}
    assert stages["pruned"]["status"] == "run" and stages["finetune"]["epochs_run"] == 1
    assert [row["stage"] for row in results["history"]] == [
        "decomposed",
        "sparsity",
        "sparsity",
        "finetune",
    ]
    assert all("svd_rank" in row and "svd_orthogonality" in row for row in results["history"])
    for layer in results["layers"]:
        assert 1 <= layer["rank"] <= layer["max_rank"] and layer["energy_kept"] >= 0.95 - 1e-6
    assert results["total_rank"] == sum(results["ranks"].values())
    float32 = results["tflite"]["float32"]
    assert float32["max_error"] < 1e-4
    assert results["accuracy"]["tflite_float32"] == pytest.approx(results["accuracy"]["compact"])
    for name in ("stage3_pruned.keras", "stage4_finetune.keras", "compact.keras", "ranks.png"):
        assert (run_dir / name).exists(), name
    assert {"epoch_svd_rank", "epoch_svd_orthogonality"} <= _tags(os.path.join(log_dir, "sparsity"))
    # Everything finished: a rerun skips all stages.
    again = train_svd.run(config, plots=False)
    assert {s["status"] for s in again["stages"].values()} == {"skipped"}
    assert again["ranks"] == results["ranks"]


def _saved_dense_model(path, width=4):
    data = example_data.load_dataset("synthetic")
    model = example_models.build_model("small_cnn", data.input_shape, data.num_classes, width)
    example_training.save_model(model, str(path))
    return model


def test_compress_to_a_latency_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model_path = tmp_path / "dense.keras"
    _saved_dense_model(model_path, width=8)
    results = compress.run(
        model_path=str(model_path),
        dataset="synthetic",
        latency_budget=1.0,  # tiny layers: only the budget of the dense model is sure to fit
        epochs=1,
        output_dir=str(tmp_path / "out"),
        verbose=0,
        plots=False,
        validate=False,
    )
    assert results["ranks"] and results["tflite"]["float32"]["max_error"] < 1e-4
    assert (tmp_path / "cache" / "lrpet_tf" / "latency").is_dir()


@pytest.mark.parametrize("method", ["lrpet", "svd"])
def test_compress_to_a_macs_target(tmp_path, method):
    model_path = tmp_path / "dense.keras"
    _saved_dense_model(model_path, width=8)
    results = compress.run(
        model_path=str(model_path),
        method=method,
        dataset="synthetic",
        macs_target=0.5,
        epochs=1,
        output_dir=str(tmp_path / "out"),
        verbose=0,
        plots=False,
        validate=False,
    )
    fraction = 1.0 / results["macs_ratio"]
    assert fraction <= 0.5 and fraction == pytest.approx(results["macs_fraction_planned"])
    # The smallest prune ratio that meets the target: a slightly smaller one misses it.
    model = keras.models.load_model(model_path)
    g = results["prune_ratio"]
    total = lrpet_tf.model_report(model).total_macs
    stem = compress.CompressConfig(model_path=str(model_path)).excluded_layers(model) or None
    assert lrpet_tf.prune_ratio_for_macs(model, int(0.5 * total), exclude=stem) == g
    assert lrpet_tf.prune_ratio_for_macs(model, total, exclude=stem) == 0.0
    for name, rank in results["ranks"].items():
        assert rank == _expected_rank(model.get_layer(name).kernel.shape, g)
    assert results["tflite"]["float32"]["max_error"] < 1e-4
    assert set(results["accuracy"]) >= {"original", "truncated", "finetuned", "compact"}
    assert (tmp_path / "out" / "compact_float32.tflite").exists()


def _low_rank(model, rank=2):
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy()
            matrix = kernel.reshape(-1, kernel.shape[-1])
            u, s, vt = np.linalg.svd(matrix, full_matrices=False)
            s[rank:] = 0
            layer.kernel.assign(((u * s) @ vt).reshape(kernel.shape))
    return model


def test_export_tflite_factorizes_verifies_and_times(tmp_path):
    model = _low_rank(_saved_dense_model(tmp_path / "dense.keras", width=8))
    example_training.save_model(model, str(tmp_path / "low_rank.keras"))
    results = export_tflite.run(
        model_path=str(tmp_path / "low_rank.keras"), dataset="synthetic", runs=5, warmup=1
    )
    assert results["kind"] == "low-rank" and len(results["factorized"]) == 6
    tflite, reference = results["tflite"], results["reference"]
    assert tflite["path"] == str(tmp_path / "low_rank_float32.tflite")
    assert os.path.exists(tflite["path"]) and (tmp_path / "low_rank_float32.json").exists()
    assert tflite["max_error"] < 1e-4 and tflite["conv2d_ops"] == 2 * reference["conv2d_ops"]
    assert tflite["macs"] < reference["macs"] and tflite["latency_ms"]["median_ms"] > 0
    assert results["speedup"] > 0 and tflite["accuracy"] == pytest.approx(reference["accuracy"])
    # An SVD-training model (SVD-form layers) exports too, here in float16.
    svd_model = svd_training.decompose(keras.models.load_model(tmp_path / "dense.keras"))
    example_training.save_model(svd_model, str(tmp_path / "svd.keras"))
    half = export_tflite.run(
        model_path=str(tmp_path / "svd.keras"), dataset="synthetic", quantization="float16", runs=3
    )
    assert half["kind"] == "svd" and "reference" not in half
    assert half["tflite"]["path"].endswith("svd_float16.tflite")


def test_imagenet_folders_and_tfrecords_load(tmp_path):
    rng = np.random.default_rng(0)
    folders = tmp_path / "folders"
    records = tmp_path / "records"
    records.mkdir()
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            (folders / split / label).mkdir(parents=True)
            for i in range(3):
                image = rng.integers(0, 255, (40, 30 + 10 * i, 3), dtype=np.uint8)
                tf.io.write_file(str(folders / split / label / f"{i}.png"), tf.io.encode_png(image))
        name = "train-00000-of-00001" if split == "train" else "validation-00000-of-00001"
        with tf.io.TFRecordWriter(str(records / name)) as writer:
            for label in (1, 2):  # 1-based labels, as the TF-Slim converter writes them
                png = tf.io.encode_png(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).numpy()
                feature = {
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    "image/class/label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[label])
                    ),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    data = example_data.load_dataset("imagenet", data_dir=str(folders), image_size=32)
    assert data.num_classes == 2 and data.num_train == 6 and data.input_shape == (32, 32, 3)
    x, y = next(iter(data.train_dataset(4, augment="crop_flip")))
    assert x.shape == (4, 32, 32, 3) and set(y.numpy()) <= {0, 1}
    x_test, y_test = data.test_arrays()
    assert x_test.shape == (6, 32, 32, 3) and list(y_test) == [0, 0, 0, 1, 1, 1]
    data = example_data.load_dataset("imagenet", data_dir=str(records), image_size=32)
    x_test, y_test = data.test_arrays()
    assert x_test.shape == (2, 32, 32, 3) and list(y_test) == [0, 1]


def test_models_recipes_and_flag_parsing():
    resnet56 = example_models.build_model("resnet56", (32, 32, 3), 10)
    report = lrpet_tf.model_report(resnet56)
    trainable = sum(int(np.prod(w.shape)) for w in resnet56.trainable_weights)
    assert round(trainable / 1e6, 2) == 0.85  # the paper's 0.85M parameters
    assert round(report.total_macs / 1e6, 1) == 125.5  # and 125.49M FLOPs
    resnet18 = example_models.build_model("resnet18", (224, 224, 3), 1000)
    assert round(lrpet_tf.model_report(resnet18).total_macs / 1e9, 2) == 1.81
    schedule = example_recipes.get_recipe("paper").learning_rate_schedule(10, 400)
    # x0.1 from the first step of epochs 200 and 300 (the optimizer's step count).
    assert [float(schedule(s)) for s in (0, 1999, 2000, 2999, 3000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001]
    )
    assert example_recipes.get_recipe("paper").describe() == (
        "SGD momentum 0.9, lr 0.1, x0.1 at 50%/75% of the epochs, coupled L2 0.0001"
    )
    assert example_recipes.get_recipe("svd_paper", schedule="cosine").describe() == (
        "Adam, lr 0.001, cosine decay to 0, coupled L2 0"
    )
    assert example_flags.parse_ranks("18,43*12") == [18] + [43] * 12
    assert example_flags.parse_ranks("stem=2,b0_conv1=3") == {"stem": 2, "b0_conv1": 3}
    assert example_flags.parse_ranks("8") == 8


@pytest.mark.skipif(
    not keras.__version__.startswith("3."),
    reason="Keras 3's backup is an .h5 weights file; tf_keras writes TF checkpoints",
)
def test_fit_stage_restarts_from_an_unreadable_backup_and_fit_or_load_skips_a_done_stage(
    tmp_path,
):
    """A process killed while Keras wrote its backup left a truncated file: restart, not crash."""
    data = example_data.load_dataset("digits", train_limit=192, test_limit=96)

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input(data.input_shape), keras.layers.Flatten(), keras.layers.Dense(10)]
        )

    recipe = example_recipes.get_recipe("svd_paper")
    stage_dir, path = str(tmp_path / "train"), str(tmp_path / "train.keras")
    args = (data, recipe, 2, 64)
    example_training.fit_stage(model(), *args, stage_dir, path, verbose=0, validate=False)
    os.remove(path)
    backup = tmp_path / "train" / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    (backup / "training_metadata.json").write_text('{"epoch": 0, "batch": -1}')
    example_training.fit_stage(model(), *args, stage_dir, path, verbose=0, validate=False)
    assert sorted(os.listdir(tmp_path / "train")) == ["history.csv"]  # backup gone
    csv_path = str(tmp_path / "train" / "history.csv")
    with open(csv_path) as f:  # both epochs trained again and logged again ...
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == list("0101")
    history = example_training.read_history(csv_path)
    assert [row["epoch"] for row in history] == [0, 1]  # ... and read once, the later rows
    trained = example_training.load_model(path)
    # A finished stage is loaded, not trained: the untrained model given is ignored.
    loaded = example_training.fit_or_load(
        model(), *args, str(tmp_path), "train", verbose=0, validate=False
    )
    assert example_training.read_history(csv_path) == history  # nothing trained
    for a, b in zip(loaded.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_svd_pruning_energy_for_a_macs_target(tmp_path):
    dense = _saved_dense_model(tmp_path / "dense.keras", width=8)
    svd_model = svd_training.decompose(dense, init="random")
    dense_macs = lrpet_tf.model_report(dense).total_macs
    energy = svd_training.energy_for_macs(svd_model, int(0.6 * dense_macs))
    assert 0 < energy < 1
    pruned = svd_training.prune(svd_model, energy=energy)
    assert lrpet_tf.model_report(pruned).total_macs <= 0.6 * dense_macs
    # The smallest such energy: a little less pruning misses the target.
    less = svd_training.prune(svd_model, energy=max(0.0, energy - 1e-3))
    assert lrpet_tf.model_report(less).total_macs > 0.6 * dense_macs

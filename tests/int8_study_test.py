"""The int8 study (benchmarks/int8_study.py): its smoke mode end to end, and its bar.

The smoke study (tf_keras only: it runs quantization-aware training) trains
a width-4 small_cnn on synthetic 8x8 images for one epoch, dense and LRPET,
then writes and measures the four files (dense float32, compact float32,
compact post-training int8, compact QAT int8) in process. The checks are on
what holds whatever the accuracy: the files, op structure, sizes relative to
each other, latency entries and the result files. In Keras 3 mode the study
refuses at once with the library's message.
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import int8_study  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import _keras  # noqa: E402


@pytest.mark.skipif(_keras.IS_KERAS_3, reason="QAT needs tf_keras (TF_USE_LEGACY_KERAS=1)")
def test_smoke_study_writes_four_measured_files(tmp_path):
    results = int8_study.run(smoke=True, output_dir=str(tmp_path))
    variants = results["variants"]
    assert list(variants) == list(int8_study.VARIANTS)
    for entry in variants.values():
        assert os.path.exists(entry["path"]) and entry["bytes"] == os.path.getsize(entry["path"])
        assert 0.0 <= entry["accuracy"] <= 1.0
        assert entry["latency"]["median_ms"] > 0 and entry["latency"]["invokes"] == 2 * 3
    dense, compact = variants["dense_float32"], variants["compact_float32"]
    assert compact["macs"] < dense["macs"] and compact["params"] < dense["params"]
    for name in int8_study.INT8_VARIANTS:
        assert variants[name]["macs"] == compact["macs"]
        ops = lrpet_tf.TFLiteModel(variants[name]["path"]).op_names()
        assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
        assert ops.count("CONV_2D") == lrpet_tf.TFLiteModel(compact["path"]).op_names().count(
            "CONV_2D"
        )
    assert variants["dense_float32"]["latency"]["speedup"]["median"] == pytest.approx(1.0)
    assert set(results["acceptance"]) == set(int8_study.INT8_VARIANTS)
    assert len(results["qat_history"]["loss"]) == 1 and results["ranks"]
    # The smoke config leaves the stem dense: not projected, one CONV_2D op.
    assert "stem" not in results["ranks"] and "b0_conv1" in results["ranks"]
    compact_convs = lrpet_tf.TFLiteModel(compact["path"]).op_names().count("CONV_2D")
    assert compact_convs == 2 * len(results["ranks"]) + 1
    # The ranks were allocated on the trained dense model at g=0.5's parameters.
    allocation = results["allocation"]
    assert results["ranks"] == allocation["ranks"]
    assert allocation["uniform_ranks"] == {
        "b0_conv1": 2, "b0_conv2": 2, "b1_conv1": 4, "b1_conv2": 4, "b1_shortcut": 2
    }  # fmt: skip
    unit = {"b0_conv1": 40, "b0_conv2": 40, "b1_conv1": 44, "b1_conv2": 80, "b1_shortcut": 12}
    assert sum(unit[n] * r for n, r in allocation["ranks"].items()) <= 680
    uniform_entry, entry = results["size_plan"]["compact_int8"]
    assert uniform_entry["prune_ratio"] == 0.5 and entry["prune_ratio"] is None
    assert entry["ranks"] == results["ranks"] and entry["int8_bytes"] > 0
    # The untrained plan predicts the trained files' sizes (same ranks, stem dense)
    # up to a few hundred bytes that do not scale with the model: 136 and 288
    # here (about 1% and 3% of a width-4 model's files), 144 and 288 in the
    # Fashion-MNIST study (0.05% and 0.6%).
    plan_dense = results["size_plan"]["dense_float32_bytes"]
    assert abs(plan_dense - dense["bytes"]) <= 400
    ptq_bytes = variants["compact_ptq_int8"]["bytes"]
    assert abs(entry["int8_bytes"] - ptq_bytes) <= 400
    # One entry per run in the study's file, without local paths.
    with open(tmp_path / "int8_study.json") as f:
        study = json.load(f)
    assert list(study["runs"]) == ["smoke"] and study["study"] == "int8_study"
    entry = study["runs"]["smoke"]
    assert entry["config"]["qat_epochs"] == 1 and "output_dir" not in entry["config"]
    assert entry["variants"]["compact_ptq_int8"]["path"] == "compact_ptq_int8.tflite"
    assert entry["variants"]["compact_ptq_int8"]["bytes"] == ptq_bytes
    assert entry["training_history"]["dense"]["loss"] == [
        pytest.approx(loss, rel=1e-3) for loss in results["training_history"]["dense"]["loss"]
    ]
    markdown = (tmp_path / "int8_study.md").read_text()
    assert "### Run `smoke`" in markdown and "| `smoke` | 0 | 1 | per-layer | stem |" in markdown
    assert "compact, QAT int8" in markdown and "Command: `int8_study.py --smoke`" in markdown
    assert "Load average" in markdown and "tf_keras" in markdown
    assert (
        "left dense (`exclude`): stem" in markdown
        and "Chosen by `lrpet_tf.allocate_ranks`" in markdown
    )
    assert "per-layer ranks, stem left dense" in markdown


@pytest.mark.skipif(not _keras.IS_KERAS_3, reason="the Keras 3 error")
def test_study_in_keras3_refuses_at_once(tmp_path):
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        int8_study.run(smoke=True, output_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.keras_independent
def test_acceptance_bar():
    def entry(bytes_, accuracy):
        return {"bytes": bytes_, "accuracy": accuracy}

    variants = {
        "dense_float32": entry(600_000, 0.90),
        "compact_float32": entry(300_000, 0.895),
        "compact_ptq_int8": entry(100_000, 0.889),  # 6.0x, -1.1 points
        "compact_qat_int8": entry(100_001, 0.895),  # just under 6x
    }
    checks = int8_study.acceptance(variants)
    ptq, qat = checks["compact_ptq_int8"], checks["compact_qat_int8"]
    assert ptq["size_ok"] and not ptq["accuracy_ok"] and not ptq["met"]
    assert ptq["accuracy_loss_points"] == pytest.approx(1.1)
    assert not qat["size_ok"] and qat["accuracy_ok"] and not qat["met"]
    with pytest.raises(ValueError, match="prune_ratio"):
        int8_study.StudyConfig(prune_ratio=1.0)
    with pytest.raises(ValueError, match="allocate_images=4, ranks=3"):
        int8_study.StudyConfig(allocate_images=4, ranks=3)


def test_size_plan_and_training_take_per_layer_ranks():
    ranks = {"b0_conv1": 3, "b0_conv2": 3, "b1_conv1": 3, "b1_conv2": 2, "b1_shortcut": 1}
    config = int8_study.StudyConfig(ranks=ranks, exclude=("stem",))
    train = config.train_config("lrpet")
    assert train.ranks == ranks and train.run_name().endswith("_ranks_no-stem")
    plan = int8_study.size_plan(
        "small_cnn", (8, 8, 1), 10, 4, (0.5,), exclude=("stem",), ranks=ranks
    )
    uniform, chosen = plan["compact_int8"]
    assert uniform["prune_ratio"] == 0.5 and chosen["prune_ratio"] is None
    assert chosen["ranks"] == ranks and uniform["ranks"]["b1_conv2"] == 4
    # The factorized layers' weights: r * (k*k*c + n) each, the rest unchanged.
    kernels = {"b0_conv1": (36, 4), "b0_conv2": (36, 4), "b1_conv1": (36, 8),
               "b1_conv2": (72, 8), "b1_shortcut": (4, 8)}  # fmt: skip
    factor = {name: rows + cols for name, (rows, cols) in kernels.items()}
    difference = sum(factor[n] * (uniform["ranks"][n] - r) for n, r in ranks.items())
    assert uniform["params"] - chosen["params"] == difference
    assert chosen["int8_bytes"] < uniform["int8_bytes"]
    with pytest.raises(ValueError, match="one rank per conv"):
        int8_study.size_plan("small_cnn", (8, 8, 1), 10, 4, (), ranks=[1, 2])

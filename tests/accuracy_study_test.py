"""The accuracy study (benchmarks/accuracy_study.py): its plan, and its smoke mode end to end.

The smoke study trains LRPET and SVD training for one epoch on synthetic
8x8 images (small_cnn of width 4) through the examples' `run` functions, in
process. The checks are on what must hold whatever the accuracy: the MACs of
the compact models (LRPET's equal to its factorized ranks' count, SVD
training's pruned to within a few percent below it), the parameters, the
exported .tflite files and the JSON, table and plot files; and a second call
skips the finished runs. The smoke tests train (about a minute on 2 quiet
cores, several on a loaded machine), so they are marked slow like the example
scripts' tests: `pytest -m slow tests/accuracy_study_test.py`.
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import accuracy_study  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("accuracy_study")
    return output_dir, accuracy_study.run(smoke=True, output_dir=str(output_dir))


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_plan_runs_every_variant_and_level_with_two_seeds_for_dense_and_lrpet():
    study = accuracy_study.StudyConfig()
    names = [spec.name for spec in accuracy_study.plan(study)]
    assert len(names) == len(set(names)) == 19
    assert names[0] == "dense_s0" and "dense_s1" in names
    assert {"lrpet_g0.5_s0", "lrpet_g0.75_s0", "lrpet_g0.5_s1", "lrpet_g0.75_s1"} <= set(names)
    assert "trp_g0.75_s1" not in names  # one seed for the other variants
    # The shared dense pre-training runs before the two train-then-compress runs.
    assert names.index("dense_pretrain_s0") < names.index("train_then_compress_g0.5_s0")
    # Every variant's first seed comes before any second seed.
    assert max(names.index(n) for n in names if n.endswith("_s0")) < names.index("dense_s1")
    assert study.svd_epochs == (2, 2, 2)  # E - F = 4 split in two, then F = 2


def test_study_config_rejects_a_finetune_as_long_as_training():
    with pytest.raises(ValueError, match="finetune_epochs"):
        accuracy_study.StudyConfig(epochs=2, finetune_epochs=2)
    with pytest.raises(ValueError, match="variants"):
        accuracy_study.StudyConfig(variants=("lrpet", "prune"))


@pytest.mark.slow
def test_smoke_compact_models_have_matched_macs(smoke):
    output_dir, result = smoke
    study = accuracy_study.smoke_config(str(output_dir))
    lrpet, svd = result["runs"]["lrpet_g0.5_s0"], result["runs"]["svd_g0.5_s0"]
    assert lrpet["dense_macs"] == svd["dense_macs"] > 0
    # LRPET's compact model has exactly the MACs of its factorized ranks.
    fraction = accuracy_study.lrpet_macs_fraction(study, 0.5, (8, 8, 1), 10)
    assert lrpet["macs"] == pytest.approx(fraction * lrpet["dense_macs"], rel=1e-9)
    assert lrpet["macs_ratio"] == pytest.approx(lrpet["dense_macs"] / lrpet["macs"])
    assert 1.5 < lrpet["macs_ratio"] < 2.5
    # SVD training is pruned to at most LRPET's MACs, and within a few percent of them.
    assert svd["macs_target"] == pytest.approx(fraction)
    assert 0.93 * lrpet["macs"] <= svd["macs"] <= lrpet["macs"]
    for run in (lrpet, svd):
        assert run["params"] < run["dense_params"]
        assert run["params_ratio"] == pytest.approx(run["dense_params"] / run["params"])
        assert run["tflite_verified"] and run["tflite_bytes"] > 0
        assert 0.0 <= run["accuracy"] <= 1.0
        assert abs(run["tflite_accuracy"] - run["accuracy"]) <= 1 / run["test_images"] + 1e-9
        assert "compact .tflite float32" in run["report"]
        assert run["train_seconds"] > 0
    assert lrpet["epochs"] == [1] and svd["epochs"] == [1, 1, 1]
    assert len(lrpet["ranks"]) == 6 and min(lrpet["ranks"].values()) >= 1  # small_cnn's convs
    assert lrpet["total_rank"] == sum(lrpet["ranks"].values())


@pytest.mark.slow
def test_smoke_writes_json_table_and_plot_and_resumes(smoke):
    output_dir, result = smoke
    per_run = output_dir / "accuracy_study"
    assert sorted(os.listdir(per_run)) == ["lrpet_g0.5_s0.json", "svd_g0.5_s0.json"]
    saved = _load(output_dir / "accuracy_study.json")
    assert [row["variant"] for row in saved["rows"]] == ["lrpet", "svd"]
    assert saved["pending"] == []
    assert saved["runs"]["lrpet_g0.5_s0"]["macs"] == result["runs"]["lrpet_g0.5_s0"]["macs"]
    markdown = (output_dir / "accuracy_study.md").read_text()
    assert "| variant | g | seeds | compact test acc. %" in markdown
    assert accuracy_study.LABELS["lrpet"] in markdown
    assert accuracy_study.LABELS["svd"] in markdown
    assert "Budget: every variant trains E = 1 epochs" in markdown
    assert "train_svd (svd_channel_hoyer)" in markdown  # the scripts' report tables
    assert os.path.getsize(result["plot"]) > 0
    # A second call finds every run's JSON and trains nothing.
    before = {name: os.path.getmtime(per_run / name) for name in os.listdir(per_run)}
    again = accuracy_study.run(smoke=True, output_dir=str(output_dir))
    assert {name: os.path.getmtime(per_run / name) for name in before} == before
    assert again["rows"] == saved["rows"]

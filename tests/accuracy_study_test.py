"""The accuracy study (benchmarks/accuracy_study.py): its run order, its statistics, its smoke run.

The smoke study trains every method once on the 8x8 digits (a width-4
ResNet-8, 3 epochs) and checks what must hold whatever the accuracy: every
run wrote its result file, the compact models' MACs (LRPET's equal to its
uniform ranks' factorized count, SVD training's pruned to at most that),
the report's tables, no machine-local paths in the result files, and that a
second call skips every finished run.
"""

import json
import os
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import accuracy_study as study_module  # noqa: E402

Run = study_module.Run


def fake(method, level, seed, accuracy):
    m = study_module.METHODS[method]
    return {
        "run": Run(method, level, seed).name,
        "method": method,
        "scenario": m.scenario,
        "role": m.role,
        "level": level,
        "seed": seed,
        "accuracy": accuracy,
        "macs": 100,
        "dense_macs": 200,
        "params": 10,
        "train_images": 100,
        "seconds_this_process": 1.0,
    }


@pytest.mark.keras_independent
def test_scenario_b_with_its_later_seeds_comes_first_then_scenario_a():
    study = study_module.StudyConfig(levels=(0.5,), seeds=(0, 1, 2))
    due = [r.name for r in study_module.runs_due(study, {})]
    assert due[:4] == ["dense_s0", "dense_2x_s0", "ft_lrpet_g0.5_s0", "ft_lrpet_recal_g0.5_s0"]
    assert due.index("ft_svd_g0.5_s0") < due.index("lrpet_g0.5_s0")  # the short runs first
    assert len(due) == len(set(due))
    # Before the seed-0 results exist, only dense and paper-default LRPET get more seeds.
    # Its BN re-estimation (derived, no training) comes with it at every seed.
    later = [name for name in due if not name.endswith("_s0")]
    assert later == [
        "ft_lrpet_g0.5_s1",
        "ft_lrpet_recal_g0.5_s1",
        "ft_lrpet_g0.5_s2",
        "ft_lrpet_recal_g0.5_s2",
        "lrpet_g0.5_s1",
        "lrpet_recal_g0.5_s1",
        "lrpet_g0.5_s2",
        "lrpet_recal_g0.5_s2",
        "dense_s1",
        "dense_s2",
    ]
    assert due.index("ft_lrpet_g0.5_s2") < due.index("lrpet_g0.5_s0")  # B answered first
    results = {
        r.name: fake(r.method, r.level, r.seed, 0.5) for r in study_module.runs_due(study, {})
    }
    results["lrpet_recal_g0.5_s0"]["accuracy"] = 0.9  # gets every seed with lrpet anyway, so
    results["lrpet_no_bnrect_g0.5_s0"]["accuracy"] = 0.85  # the best trained variant gets them
    results["scratch_g0.5_s0"]["accuracy"] = 0.8  # best scenario-A baseline
    results["ft_tsvd_g0.5_s0"]["accuracy"] = 0.7
    results["ft_lrpet_ramp_g0.5_s0"]["accuracy"] = 0.6
    due = [r.name for r in study_module.runs_due(study, results)]
    for seed in (1, 2):
        for name in ("lrpet", "lrpet_recal", "lrpet_no_bnrect", "scratch", "ft_lrpet"):
            assert f"{name}_g0.5_s{seed}" in due
        for name in ("ft_lrpet_ramp", "ft_tsvd"):
            assert f"{name}_g0.5_s{seed}" in due
        assert f"lrpet_ramp_g0.5_s{seed}" not in due
    # Scenario B's later seeds (best variant and baseline included) come before scenario A.
    b_later = [
        due.index(f"{m}_g0.5_s{seed}") for m in ("ft_lrpet_ramp", "ft_tsvd") for seed in (1, 2)
    ]
    assert max(b_later) < due.index("lrpet_g0.5_s0")
    # The recalibrated row is derived from the LRPET run of the same seed, which comes first.
    assert due.index("lrpet_g0.5_s1") < due.index("lrpet_recal_g0.5_s1")
    assert "trp_g0.5_s1" not in due and "lrpet_stem_g0.5_s1" not in due
    # Scenario A's ranking rows (and their later seeds) before its explanatory rows.
    assert due.index("svd_g0.5_s0") < due.index("lrpet_ramp_g0.5_s0")
    assert due.index("lrpet_g0.5_s2") < due.index("lrpet_no_et_g0.5_s0")
    assert due[-2:] == ["lrpet_no_et_g0.5_s0", "lrpet_stem_g0.5_s0"]
    # Scenario B's explanatory row comes with B, before scenario A.
    assert due.index("ft_tsvd_g0.5_s2") < due.index("ft_lrpet_trunc_first_g0.5_s0")
    assert due.index("ft_lrpet_trunc_first_g0.5_s0") < due.index("lrpet_g0.5_s0")


@pytest.mark.keras_independent
def test_later_seeds_go_seed_by_seed_across_g_and_dense_last():
    study = study_module.StudyConfig(levels=(0.5, 0.75), seeds=(0, 1, 2))
    due = [r.name for r in study_module.runs_due(study, {})]
    for prefix in ("ft_lrpet", "lrpet"):  # seed 1 at every g, then seed 2
        assert due.index(f"{prefix}_g0.75_s1") < due.index(f"{prefix}_g0.5_s2")
        assert due.index(f"{prefix}_g0.5_s1") < due.index(f"{prefix}_g0.75_s1")
    # Dense's later seeds only feed "within 0.5 points of dense": after A's compared rows.
    assert due.index("lrpet_recal_g0.75_s2") < due.index("dense_s1")
    assert due.index("dense_s2") < due.index("lrpet_no_et_g0.5_s0")


@pytest.mark.keras_independent
def test_fit_table_means_training_accuracy_over_seeds_from_the_histories():
    results = {}
    for seed, (first, last) in enumerate([(0.50, 0.90), (0.70, 0.94)]):
        item = fake("ft_lrpet", 0.5, seed, 0.9)
        item["history"] = [
            {"stage": "train", "epoch": 1, "accuracy": first, "lrpet_energy_kept": 0.6},
            {"stage": "train", "epoch": 2, "accuracy": 0.8},
            {"stage": "train", "epoch": 3, "accuracy": last},
        ]
        results[item["run"]] = item
    tsvd = fake("ft_tsvd", 0.5, 0, 0.91)
    tsvd["history"] = [{"stage": "train", "epoch": e, "accuracy": 0.85} for e in (1, 2)]
    results[tsvd["run"]] = tsvd
    no_history = fake("lrpet", 0.5, 0, 0.9)  # scenario A: not in B's table
    results[no_history["run"]] = no_history
    lines = "\n".join(study_module._fit_table(results, "B")).splitlines()
    rows = [line for line in lines if line.startswith(("| LRPET", "| trunc"))]
    assert rows == [
        "| LRPET fine-tuning, paper defaults | 0.5 | 2 | 60.00 | 80.00 | 92.00 | 90.00 | 0.600 |",
        "| truncated SVD, then fine-tuning | 0.5 | 1 | 85.00 | 85.00 | 85.00 | 91.00 |  |",
    ]
    assert study_module._fit_table(results, "A") == []


@pytest.mark.keras_independent
def test_aggregate_mean_sample_sd_and_spread_comparison():
    results = {}
    for seed, (a, b) in enumerate([(0.90, 0.85), (0.92, 0.86), (0.91, 0.84)]):
        for method, accuracy in (("lrpet", a), ("scratch", b)):
            item = fake(method, 0.5, seed, accuracy)
            results[item["run"]] = item
    rows = {r["method"]: r for r in study_module.aggregate(results)}
    assert rows["lrpet"]["accuracy"] == pytest.approx(91.0)
    assert rows["lrpet"]["sd"] == pytest.approx(np.std([90, 92, 91], ddof=1))
    assert rows["lrpet"]["per_seed"] == pytest.approx([90, 92, 91])
    assert rows["lrpet"]["macs_ratio"] == pytest.approx(2.0)
    delta, exceeds = study_module.compare(rows["lrpet"], rows["scratch"])
    assert delta == pytest.approx(6.0) and exceeds  # 6 points > 1 + 1
    close = dict(rows["scratch"], accuracy=90.5)
    assert study_module.compare(rows["lrpet"], close)[1] is False
    single = fake("trp", 0.5, 0, 0.5)
    (row,) = study_module.aggregate({"x": single})
    assert row["sd"] is None and study_module.compare(rows["lrpet"], row)[1] is None


keras_3_only = pytest.mark.skipif(
    not study_module.keras.__version__.startswith("3."),
    reason="the study runs in Keras 3 mode; its smoke run once per suite is enough",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("accuracy_study")
    study = study_module.smoke_config(str(folder))
    lines = []
    markdown, payload = study_module.run(study, log=lines.append)
    return study, markdown, payload, lines


@keras_3_only
def test_smoke_study_runs_every_method_and_reports(smoke):
    study, markdown, payload, lines = smoke
    results = study_module.load_results(study)
    expected = {r.name for r in study_module.runs_due(study, results)}
    assert set(results) == expected and not payload["pending"]
    assert {r["method"] for r in results.values()} == set(study_module.METHODS)
    lrpet = results["lrpet_g0.5_s0"]
    for name in (
        "lrpet_ramp",
        "lrpet_recal",
        "lrpet_no_et",
        "trp",
        "scratch",
        "ft_lrpet",
        "ft_lrpet_no_bnrect",
        "ft_lrpet_trunc_first",
        "ft_tsvd",
    ):
        assert results[f"{name}_g0.5_s0"]["macs"] == lrpet["macs"], name
    assert lrpet["macs"] < lrpet["dense_macs"]
    for name in ("lrpet_alloc_macs", "ft_tsvd_alloc_macs", "ft_lrpet_alloc_macs"):
        summary = results[f"{name}_g0.5_s0"]
        assert summary["macs"] <= lrpet["macs"], name  # allocated at uniform g's MACs
        assert study_module.at_equal_macs(summary["macs"], lrpet["macs"]), name
    assert (
        results["ft_tsvd_alloc_macs_g0.5_s0"]["ranks"]
        == (results["ft_lrpet_alloc_macs_g0.5_s0"]["ranks"])
    )
    for name in ("svd_g0.5_s0", "ft_svd_g0.5_s0"):
        assert results[name]["macs"] <= results[name]["macs_target"] == lrpet["macs"]
    assert "stem" in results["lrpet_stem_g0.5_s0"]["ranks"]
    # The truncated start: the dense kernels' energy in their top-r singular values.
    dense = study_module.example_training.load_model(study.dense_model)
    uniform = study_module.lrpet_tf.LRPET(prune_ratio=0.5, exclude=["stem"], verbose=0)
    uniform.prepare(dense)
    kept = []
    for name, rank in uniform.ranks.items():
        kernel = dense.get_layer(name).kernel.numpy()
        s = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)
        kept.append(np.sum(s[:rank] ** 2) / np.sum(s**2))
    trunc_first = results["ft_lrpet_trunc_first_g0.5_s0"]
    assert trunc_first["truncation_energy_kept"] == pytest.approx(np.mean(kept), rel=1e-5)
    assert "stem" not in lrpet["ranks"] and lrpet["ranks"]
    for summary in results.values():
        assert 0.0 <= summary["accuracy"] <= 1.0 and summary["test_images"] == 360
    # Each trained epoch logs its wall time; a run's time counts them all.
    (row, *_) = lrpet["history"]
    assert row["stage"] == "train" and row["epoch"] == 1 and row["epoch_seconds"] > 0
    epochs = sum(r["epoch_seconds"] for r in lrpet["history"])
    resumed = dict(lrpet, seconds_this_process=0.5 * epochs)  # as if resumed mid-way
    assert study_module.run_seconds(resumed) == pytest.approx(epochs)
    assert study_module.run_seconds(lrpet) == lrpet["seconds_this_process"] >= epochs
    assert "### Scenario A, from scratch" in markdown and "### Scenario B" in markdown
    assert "Convergence: Dense, seed 0: " in markdown and "2E = 6" in markdown
    assert os.path.exists(os.path.join(study.plot_dir, "accuracy_study_vs_macs.png"))
    assert os.path.exists(study.dense_model)
    files = [os.path.join(d, f) for d, _, names in os.walk(study.json_dir()) for f in names]
    assert study_module.start_path(study) in files
    for name in files:
        text = open(name).read()
        assert str(study.runs_dir) not in text and ROOT not in text, name
    with open(study_module.start_path(study)) as f:
        start = json.load(f)["rows"]
    assert [(r["level"], r["variant"]) for r in start] == [
        (0.5, label) for label, _ in study_module._START_VARIANTS
    ]
    assert all(0.0 <= r[k] <= 1.0 for r in start for k in ("projected", "recalibrated"))
    assert "Scenario B's start, before any fine-tuning" in markdown
    assert len([line for line in lines if line.startswith("[")]) == len(expected)


@keras_3_only
def test_smoke_study_second_call_skips_finished_runs(smoke):
    study = smoke[0]
    lines = []
    markdown, _ = study_module.run(study, log=lines.append)
    assert lines == [] and markdown == smoke[1]
    with open(os.path.join(study.results_dir, "accuracy_study.json")) as f:
        assert json.load(f)["pending"] == []


@pytest.mark.keras_independent
def test_rows_with_more_macs_than_uniform_g_are_reported_not_ranked():
    study = study_module.StudyConfig(levels=(0.5,), seeds=(0, 1, 2))
    results = {
        r.name: fake(r.method, r.level, r.seed, 0.5) for r in study_module.runs_due(study, {})
    }
    results["ft_tsvd_alloc_g0.5_s0"].update(accuracy=0.95, macs=127)  # more MACs, best accuracy
    results["ft_tsvd_g0.5_s0"]["accuracy"] = 0.7
    results["ft_svd_g0.5_s0"].update(accuracy=0.6, macs=99)  # pruned to at most the target
    results["ft_tsvd_alloc_macs_g0.5_s0"]["accuracy"] = 0.8  # at equal MACs: ranked
    due = [r.name for r in study_module.runs_due(study, results)]
    assert "ft_tsvd_g0.5_s1" in due and "ft_tsvd_alloc_g0.5_s1" not in due
    assert "ft_tsvd_alloc_macs_g0.5_s1" in due  # the best allocation row gets the seeds
    markdown = study_module.render(study, results)
    (line,) = [x for x in markdown.splitlines() if x.startswith("- g = 0.5") and "fine-tuning" in x]
    assert "best baseline (truncated SVD, then fine-tuning, 70.00%)" in line
    assert (
        "lrpet_tf's rank allocation without LRPET's projection (truncated SVD at "
        "allocate_ranks ranks, MACs budget, fine-tuning, 80.00%): +10.00 points, seeds "
        "pending vs the best baseline, +30.00 points, seeds pending vs the best LRPET path."
    ) in line
    assert line.endswith(
        "Not ranked, more MACs than uniform g: "
        "truncated SVD at allocate_ranks ranks, parameter budget, fine-tuning (95.00% at 1.57x)."
    )
    assert study_module.at_equal_macs(101, 100) and not study_module.at_equal_macs(102, 100)


@pytest.mark.keras_independent
def test_rows_passed_over_by_seed_0_that_end_above_the_compared_row_are_named():
    study = study_module.StudyConfig(levels=(0.5,), seeds=(0, 1, 2))
    results = {
        r.name: fake(r.method, r.level, r.seed, 0.5) for r in study_module.runs_due(study, {})
    }
    results["scratch_g0.5_s0"]["accuracy"] = 0.9  # the baseline chosen by seed 0 ...
    results["trp_g0.5_s0"]["accuracy"] = 0.8
    results["lrpet_no_bnrect_g0.5_s0"]["accuracy"] = 0.7  # ... and the chosen variant
    results = _finished(study, results)
    results["scratch_g0.5_s1"]["accuracy"] = 0.6  # ... whose later seeds fall
    results["scratch_g0.5_s2"]["accuracy"] = 0.6  # mean 0.70: below TRP's one seed
    line = _line(study_module.render(study, results), "- g = 0.5", "compact architecture")
    assert "best baseline (compact architecture from scratch, 70.00%)" in line
    assert (
        "Above the compared baseline on fewer seeds (passed over by seed 0): "
        "TRP-style truncation (80.00%, 1 seed)."
    ) in line
    assert "Above the compared LRPET path" not in line  # the variant stayed the best path
    # BN re-estimation has every seed with LRPET: above the path, it is named as such.
    for seed in (0, 1, 2):
        results[f"lrpet_recal_g0.5_s{seed}"]["accuracy"] = 0.75
    line = _line(study_module.render(study, results), "- g = 0.5", "compact architecture")
    assert line.endswith(
        "Above the compared LRPET path with as many seeds: LRPET + BN re-estimation "
        "(75.00%, 3 seeds). Above the compared baseline on fewer seeds (passed over by "
        "seed 0): TRP-style truncation (80.00%, 1 seed)."
    )


def _finished(study, results=None, accuracy=0.5):
    """Every run due (later seeds included) finished at `accuracy`, over `results`."""
    results = dict(results or {})
    for _ in range(3):  # the later seeds are due once the seed-0 rows exist
        for r in study_module.runs_due(study, results):
            results.setdefault(r.name, fake(r.method, r.level, r.seed, accuracy))
    return results


def _line(markdown, start, scenario_word):
    (line,) = [x for x in markdown.splitlines() if x.startswith(start) and scenario_word in x]
    return line


@pytest.mark.keras_independent
def test_comparisons_use_the_rows_that_got_the_later_seeds():
    """A one-seed runner-up with a higher mean does not displace the row its seeds went to."""
    study = study_module.StudyConfig(levels=(0.75,), seeds=(0, 1, 2))
    seed0 = {r.name: fake(r.method, r.level, r.seed, 0.5) for r in study_module.runs_due(study, {})}
    seed0["ft_lrpet_alloc_macs_g0.75_s0"]["accuracy"] = 0.893  # best variant by seed 0
    seed0["ft_lrpet_no_bnrect_g0.75_s0"]["accuracy"] = 0.890  # runner-up, one seed
    seed0["ft_tsvd_g0.75_s0"]["accuracy"] = 0.902
    results = _finished(study, seed0, 0.5)
    for seed, accuracy in ((1, 0.887), (2, 0.884)):  # its mean falls below the runner-up
        results[f"ft_lrpet_alloc_macs_g0.75_s{seed}"]["accuracy"] = accuracy
    for seed, accuracy in ((1, 0.901), (2, 0.903)):
        results[f"ft_tsvd_g0.75_s{seed}"]["accuracy"] = accuracy
    assert "ft_lrpet_no_bnrect_g0.75_s1" not in results
    line = _line(study_module.render(study, results), "- g = 0.75", "fine-tuning")
    assert line.startswith(
        "- g = 0.75: best LRPET path (LRPET fine-tuning at allocate_ranks ranks, MACs budget, "
        "88.80%) vs best baseline (truncated SVD, then fine-tuning, 90.20%): -1.40 points, "
        "exceeds the seed spread. Paper defaults (50.00%): -40.20 points, exceeds the seed spread."
    ), line


@pytest.mark.keras_independent
def test_scenario_b_is_compared_with_its_starting_model_not_dense_mean():
    study = study_module.StudyConfig(levels=(0.5,), seeds=(0, 1, 2))
    results = _finished(study)
    for seed, accuracy in ((0, 0.9), (1, 0.8), (2, 0.7)):
        results[f"dense_s{seed}"]["accuracy"] = accuracy
    markdown = study_module.render(study, results)
    a, b = markdown.split("### Scenario B")
    assert "| dense, E epochs | - | 80.00 ± 10.00 (90.00, 80.00, 70.00) | - |" in a
    assert "| LRPET, paper defaults | 0.5 | 50.00 ± 0.00 (50.00, 50.00, 50.00) | -30.00 |" in a
    assert "| dense, E epochs, seed 0 (every run's start) | - | 90.00 | - |" in b
    assert "| LRPET fine-tuning, paper defaults | 0.5 | 50.00 ± 0.00" in b
    assert "| -40.00 |" in b and "-30.00" not in b


@pytest.mark.keras_independent
@pytest.mark.parametrize(
    "scratch, dense, expected",
    [
        # LRPET 91.0 +- 0.1: 0.6 ahead (beyond 0.1 + 0.1) and 0.2 below dense.
        (
            90.4,
            91.2,
            "+0.60 points, exceeds the seed spread): met; {} -0.20 points): met. **Bar met.**",
        ),
        # Ahead by 0.15, within the spread.
        (
            90.85,
            91.2,
            "+0.15 points, within the seed spread): not met; {} -0.20 points): met. "
            "**Bar not met.**",
        ),
        # Ahead beyond the spread, but 1.0 below dense.
        (
            90.4,
            92.0,
            "+0.60 points, exceeds the seed spread): met; {} -1.00 points): not met. "
            "**Bar not met.**",
        ),
    ],
)
def test_the_bar_needs_both_parts(scratch, dense, expected):
    study = study_module.StudyConfig(levels=(0.75,), seeds=(0, 1, 2))
    seed0 = {r.name: fake(r.method, r.level, r.seed, 0.3) for r in study_module.runs_due(study, {})}
    seed0["scratch_g0.75_s0"]["accuracy"] = 0.5  # the best baseline by seed 0
    results = _finished(study, seed0, 0.3)
    for seed, offset in enumerate((0.0, 0.1, -0.1)):  # sd 0.1 each
        results[f"lrpet_g0.75_s{seed}"]["accuracy"] = (91.0 + offset) / 100
        results[f"scratch_g0.75_s{seed}"]["accuracy"] = (scratch + offset) / 100
        results[f"dense_s{seed}"]["accuracy"] = (dense + offset) / 100
    scenario_a = study_module.render(study, results).split("### Scenario B")[0]
    line = _line(scenario_a, "- The issue's bar", "")
    near = "within 0.5 points of dense at >= 2x fewer MACs (g = 0.75 (2.00x),"
    assert line.endswith("(g = 0.75, " + expected.format(near)), line


@pytest.mark.keras_independent
def test_the_bar_is_pending_while_a_compared_row_has_one_seed():
    study = study_module.StudyConfig(levels=(0.75,), seeds=(0, 1, 2))
    results = {
        r.name: fake(r.method, r.level, r.seed, 0.5) for r in study_module.runs_due(study, {})
    }
    results = {n: s for n, s in results.items() if n.endswith("_s0")}
    markdown = study_module.render(study, results)
    bars = [x for x in markdown.splitlines() if x.startswith("- The issue's bar")]
    assert len(bars) == 2  # scenarios A and B
    for line in bars:
        assert line.endswith("**Bar pending.**") and "seeds pending" in line, line


@pytest.mark.keras_independent
def test_dense_path_of_the_first_seed_falls_back_to_the_committed_model(tmp_path):
    committed = tmp_path / "dense.keras"
    study = study_module.StudyConfig(runs_dir=str(tmp_path / "runs"), dense_model=str(committed))
    ctx = types.SimpleNamespace(study=study)
    with pytest.raises(FileNotFoundError, match="dense_s0"):
        study_module._Context.dense_path(ctx, 0)
    committed.write_bytes(b"model")
    assert study_module._Context.dense_path(ctx, 0) == str(committed)
    with pytest.raises(FileNotFoundError, match="run dense_s1 first"):
        study_module._Context.dense_path(ctx, 1)  # no committed copy of later seeds
    trained = tmp_path / "runs" / "dense_s1" / "train.keras"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"model")
    assert study_module._Context.dense_path(ctx, 1) == str(trained)

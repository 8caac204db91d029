"""The benchmark scripts' smoke modes run and produce sound results.

Each benchmark's `run(smoke=True)` is called in process (no subprocess, to
share the TensorFlow import); the checks are on what the results must
satisfy whatever the machine's speed: keys, positive times, and MAC counts
equal to the factorization formula `r * (k*k*c + n)` vs `k*k*c*n`.
"""

import hashlib
import json
import os
import re
import sys
import threading

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import android_latency  # noqa: E402
import applications_report  # noqa: E402
import bench_models  # noqa: E402
import bench_utils  # noqa: E402
import bn_rectification  # noqa: E402
import int8_study  # noqa: E402
import latency_aware  # noqa: E402
import projection_cost  # noqa: E402
import rank_allocation  # noqa: E402
import rank_check_cost  # noqa: E402
import tflite_latency  # noqa: E402
import tflite_latency_report  # noqa: E402
import training_step_cost  # noqa: E402

from lrpet_tf import _keras  # noqa: E402


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_projection_cost_smoke(tmp_path):
    results = projection_cost.run(smoke=True, output_dir=str(tmp_path), plot_dir=str(tmp_path))
    entry = results["projection"]["tiny"]
    assert entry["layers"] == 2 and entry["groups"] == 2
    for variant in ("per_layer", "batched", "numpy_svd"):
        assert entry["times"][variant]["median_ms"] > 0
    assert entry["per_layer_over_batched"]["median"] > 0
    overhead = results["callback_overhead"]
    assert set(overhead["ratio_to_none"]) == {"epoch", "every_3_steps"}
    assert all(r["median"] > 0 for r in overhead["ratio_to_none"].values())
    # One timed epoch of 2 steps: the epoch schedule projects once; the step
    # schedule projects at optimizer step 3 (steps 3-4 of the run).
    assert overhead["projections"] == {"none": 0, "epoch": 1, "every_3_steps": 1}
    assert results["derived_overhead"]["tiny"]["epoch"] > 0
    study = _load(tmp_path / "projection_cost.json")
    assert list(study["runs"]) == ["smoke"]
    assert study["runs"]["smoke"]["projection"]["tiny"]["layers"] == 2
    assert "--output_dir" not in study["runs"]["smoke"]["command"]
    markdown = (tmp_path / "projection_cost.md").read_text()
    assert "### Run `smoke`" in markdown and "per-layer / batched" in markdown
    assert os.path.getsize(tmp_path / "projection_cost.png") > 0


def test_tflite_latency_smoke(tmp_path):
    results = tflite_latency.run(smoke=True, output_dir=str(tmp_path), plot_dir=str(tmp_path))
    (entry,) = results["layers"]
    shape = next(s for s in bench_models.LAYER_SHAPES if s.name == entry["shape"])
    k, c, n, positions = shape.kernel_size, shape.in_channels, shape.out_channels, shape.size**2
    assert entry["dense_macs"] == k * k * c * n * positions
    assert entry["dense_ops"] == ["CONV_2D"]
    assert {c["rank"] for c in entry["candidates"].values()} == {32, 6, 8}
    for candidate in entry["candidates"].values():
        r = candidate["rank"]
        assert candidate["factorized"]
        assert candidate["macs"] == r * (k * k * c + n) * positions
        assert candidate["report_macs"] == candidate["macs"]  # lrpet_tf.model_report agrees
        assert candidate["mac_reduction"] == pytest.approx(k * k * c * n / (r * (k * k * c + n)))
        assert candidate["ops"] == ["CONV_2D", "CONV_2D"]
        assert candidate["max_error"] < 1e-3
    assert len(entry["rows"]) == 4  # 2 ratios x 2 roundings x 1 thread count
    for row in entry["rows"]:
        assert row["dense_ms"] > 0 and row["ms"] > 0 and row["speedup"] > 0
        assert row["efficiency"] == pytest.approx(row["speedup"] / row["mac_reduction"])
    assert entry["break_even"]["1"]["status"] in ("pays_everywhere", "never_pays", "crosses")
    assert [r["rounded_rank"] for r in entry["rounding"]] == [8]
    (sweep,) = results["sweeps"]
    assert sweep["ranks"] == [4, 5]
    assert sweep["relative_macs"] == pytest.approx(
        [r * (9 * 32 + 32) / (9 * 32 * 32) for r in (4, 5)]
    )
    (model,) = results["models"]
    assert model["rows"][0]["mac_reduction"] > 1 and model["rows"][0]["speedup"] > 0
    assert model["candidates"]["g0.5_round1"]["conv2d_ops"] == 2 * model["dense_conv2d_ops"]
    assert results["invoke_floor_us"]["1"] > 0
    for path in results["plots"]:
        assert os.path.getsize(path) > 0
    assert "latency break-even" in (tmp_path / "tflite_latency.md").read_text()
    # The file keeps one timing per rank and thread count; the rows come back.
    packed = _load(tmp_path / "tflite_latency.json")
    assert packed["layers"][0]["ranks"] == {"0.5": [32, 32], "0.1": [6, 8]}
    assert set(packed["layers"][0]["timing"]["1"]) == {"inner", "dense_ms", "r32", "r6", "r8"}
    reloaded = tflite_latency_report.load(tmp_path / "tflite_latency.json")
    for before, after in ((entry, reloaded["layers"][0]), (model, reloaded["models"][0])):
        assert len(after["rows"]) == len(before["rows"])
        for r, s in zip(after["rows"], before["rows"]):
            assert {k: r[k] for k in ("ratio", "round_to", "threads", "mac_reduction")} == {
                k: s[k] for k in ("ratio", "round_to", "threads", "mac_reduction")
            }
            assert r["speedup"] == pytest.approx(s["speedup"], rel=1e-5)
            assert r["efficiency"] == pytest.approx(s["efficiency"], rel=1e-5)
            assert r.get("rank") == s.get("rank")
        assert [(r["ratio"], r["round_to"], r["mac_ratio"]) for r in after["rounding"]] == [
            (r["ratio"], r["round_to"], r["mac_ratio"]) for r in before["rounding"]
        ]
    assert reloaded["layers"][0]["candidates"]["r8"]["macs"] == entry["candidates"]["r8"]["macs"]


def test_training_step_cost_smoke(tmp_path):
    results = training_step_cost.run(smoke=True, output_dir=str(tmp_path))
    (entry,) = results["models"]
    variants = entry["variants"]
    assert set(variants) == set(training_step_cost.VARIANTS)
    for v in variants.values():
        assert v["step"]["median_ms"] > 0 and v["ratio_to_dense"]["median"] > 0
    assert variants["dense"]["ratio_to_dense"]["median"] == 1.0
    assert variants["compact"]["macs"] < variants["dense"]["macs"]
    assert variants["compact"]["params"] < variants["dense"]["params"]
    # Full-rank SVD form stores u, s, v: more parameters than the kernel.
    assert variants["svd_channel"]["params"] > variants["dense"]["params"]
    assert _load(tmp_path / "training_step_cost.json")["models"][0]["model"] == "tiny"


@pytest.mark.keras_independent
def test_latency_break_even_interpolates_the_crossing():
    ratios = [0.75, 0.5, 0.25, 0.1]
    macs = [1.2, 1.8, 3.6, 9.0]
    crossing = tflite_latency.latency_break_even(ratios, [0.8, 0.9, 1.1, 2.0], macs)
    assert crossing["status"] == "crosses"
    assert crossing["rank_ratio"] == pytest.approx(0.375)
    assert 1.8 < crossing["mac_reduction"] < 3.6
    everywhere = tflite_latency.latency_break_even(ratios, [1.1, 1.5, 2, 3], macs)
    assert everywhere["status"] == "pays_everywhere"
    assert tflite_latency.latency_break_even(ratios, [0.5] * 4, macs)["status"] == "never_pays"


@pytest.mark.keras_independent
def test_rank_for_rounds_up_and_caps():
    assert tflite_latency.rank_for(0.1, 64) == 6
    assert tflite_latency.rank_for(0.1, 64, 8) == 8
    assert tflite_latency.rank_for(0.75, 24, 8) == 24
    assert tflite_latency.rank_for(0.01, 16) == 1


@pytest.mark.keras_independent
def test_interleaved_times_and_paired_ratio():
    calls = []
    times = bench_utils.interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1
    )
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order rotates every round
    assert len(times["a"]) == len(times["b"]) == 3
    assert bench_utils.paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])["median"] == 2.0
    counter = iter(range(100))
    values = bench_utils.interleaved({"a": lambda: next(counter), "b": lambda: -1}, 2, warmup=1)
    assert values == {"a": [1, 2], "b": [-1, -1]}  # the warm-up round's values are dropped


def test_interleaved_latency_times_each_file_with_lrpet_tf_timer(tmp_path):
    import lrpet_tf
    from lrpet_tf import keras

    inputs = keras.Input((4, 4, 2), name="x")
    paths = {}
    for name, filters in (("small", 2), ("large", 8)):
        model = keras.Model(inputs, keras.layers.Conv2D(filters, 3)(inputs))
        paths[name] = lrpet_tf.export_tflite(model, tmp_path / f"{name}.tflite").path
    for reload in (False, True):
        results = bench_utils.interleaved_latency(
            paths, 3, warmup_rounds=1, runs=2, warmup=1, repeats=2, clock="cpu", reload=reload
        )
        assert set(results) == {"small", "large"}
        for rounds in results.values():
            assert len(rounds) == 3
            for r in rounds:
                assert (r.runs, r.repeats, r.clock, len(r.cpu_samples_ms)) == (2, 2, "cpu", 2)
        medians = bench_utils.round_medians(results)
        assert list(medians["small"]) == [r.median_ms for r in results["small"]]


@pytest.mark.keras_independent
def test_portable_results_round_and_drop_local_paths():
    payload = {
        "ms": np.float64(154.28571428),
        "ratio": 0.72591123456,
        "tiny": 2.0265579e-06,
        "count": np.int64(3),
        "flag": np.bool_(True),
        "shape": (1, 2),
        "plot": os.path.join(bench_utils.REPO_DIR, "benchmarks", "plots", "a.png"),
        "elsewhere": "/somewhere/else/b.png",
        "command": "python benchmarks/x.py --seed=1",
    }
    assert bench_utils.portable(payload) == {
        "ms": 154.2857,  # at least 4 decimals
        "ratio": 0.725911,  # 6 significant digits
        "tiny": 2.02656e-06,
        "count": 3,
        "flag": True,
        "shape": [1, 2],
        "plot": os.path.join("benchmarks", "plots", "a.png"),
        "elsewhere": "b.png",
        "command": "python benchmarks/x.py --seed=1",
    }
    value = {"a": [1, 2, 3], "b": {"c": [{"d": 1}] * 30}, "e": list(range(40))}
    text = bench_utils.to_json(value, width=40)
    assert text.splitlines() == [
        "{",
        ' "a":[1,2,3],',  # fits: one line
        ' "b":{',
        '  "c":[',
        '   {"d":1},{"d":1},{"d":1},{"d":1},',  # items filled up to the width
        *['   {"d":1},{"d":1},{"d":1},{"d":1},'] * 6,
        '   {"d":1},{"d":1}',
        "  ]",
        " },",
        ' "e":[',
        "  0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,",
        "  16,17,18,19,20,21,22,23,24,25,26,27,28,",
        "  29,30,31,32,33,34,35,36,37,38,39",
        " ]",
        "}",
    ]
    assert json.loads(text) == value


@pytest.mark.keras_independent
def test_write_run_keeps_every_run_of_a_study(tmp_path):
    def render(study):
        return " ".join(f"{name}={run['x']}" for name, run in study["runs"].items())

    bench_utils.write_run("s", "a", {"x": 1}, render, str(tmp_path))
    bench_utils.write_run("s", "b", {"x": 2}, render, str(tmp_path))
    study = bench_utils.write_run("s", "a", {"x": 3}, render, str(tmp_path))  # replaced in place
    assert study == {"study": "s", "runs": {"a": {"x": 3}, "b": {"x": 2}}}
    assert _load(tmp_path / "s.json") == study
    assert (tmp_path / "s.md").read_text() == "a=3 b=2\n"
    assert bench_utils.as_study({"x": 5}, "s") == {"study": "s", "runs": {"main": {"x": 5}}}
    # Runs that finish at the same time (seeds side by side) all land in the file.
    threads = [
        threading.Thread(
            target=bench_utils.write_run, args=("t", f"seed{i}", {"x": i}, render, str(tmp_path))
        )
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(_load(tmp_path / "t.json")["runs"]) == [f"seed{i}" for i in range(8)]


def test_rank_allocation_smoke(tmp_path):
    with pytest.raises(ValueError, match="run_dir='/nowhere'"):
        rank_allocation.run(rank_allocation.AllocationConfig(run_dir="/nowhere"))
    with pytest.raises(ValueError, match="images=0"):
        rank_allocation.AllocationConfig(run_dir="/nowhere", images=0)
    results = rank_allocation.run(smoke=True, output_dir=str(tmp_path))
    uniform, allocated = results["uniform"], results["allocated"]
    # Budget: g=0.5's ranks of the width-4 small_cnn, stem dense, times rows + cols.
    assert uniform["ranks"] == {
        "b0_conv1": 2,
        "b0_conv2": 2,
        "b1_conv1": 4,
        "b1_conv2": 4,
        "b1_shortcut": 2,
    }
    assert results["budget_params"] == 2 * 40 + 2 * 40 + 4 * 44 + 4 * 80 + 2 * 12
    assert allocated["params"] <= results["budget_params"]
    assert allocated["summed_cost"] <= uniform["summed_cost"] + 1e-9
    for name, curve in results["costs"].items():
        values = list(curve.values())
        assert all(b <= a for a, b in zip(values, values[1:]))
        assert 1 <= allocated["ranks"][name] <= max(curve)
    flag = ",".join(f"{n}={r}" for n, r in allocated["ranks"].items())
    assert (
        results["ranks_flag"] == flag
        and f"--ranks={flag}" in (tmp_path / "rank_allocation.md").read_text()
    )
    assert _load(tmp_path / "rank_allocation.json")["budget_params"] == results["budget_params"]


def test_bn_rectification_smoke(tmp_path):
    with pytest.raises(ValueError, match="dense_model='/nowhere.keras'"):
        bn_rectification.ProbeConfig(dense_model="/nowhere.keras")
    payload = bn_rectification.run(smoke=True, output_dir=str(tmp_path), log=lambda _: None)
    (entry,) = payload["levels"]
    dense = bn_rectification.example_training.load_model(str(tmp_path / "smoke_dense.keras"))
    assert sorted(entry["layers"]) == sorted(n for names in entry["groups"].values() for n in names)
    for name, row in entry["layers"].items():
        # The rectified projection is the best rank-r approximation of the
        # merged kernel W * a: its error is the tail of W * a's singular values.
        bn = dense.get_layer(f"{name}_bn")
        a = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        merged = dense.get_layer(name).kernel.numpy().reshape(-1, a.size) * a
        s = np.linalg.svd(merged, compute_uv=False)
        r = entry["ranks"][name]
        tail = np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2))
        assert row["rectified"]["merged_kernel_error"] == pytest.approx(tail, rel=1e-3)
        assert row["plain"]["merged_kernel_error"] >= tail * (1 - 1e-4)
        assert row["scale_spread"] == pytest.approx(a.max() / a.min(), rel=1e-5)
        for label in ("plain", "rectified"):
            assert 0 < row[label]["output_error"] and 0 < row[label]["error_after_consumer"]
            assert -1 <= row[label]["scale_error_correlation"] <= 1
    assert set(entry["rectified_group_accuracy"]) == set(entry["groups"])
    values = [entry["accuracy"][k] for k in ("plain", "rectified")]
    values += list(entry["rectified_group_accuracy"].values())
    alone = [v for pair in entry["group_alone_accuracy"].values() for v in pair.values()]
    values += [v["accuracy"] for v in alone]
    assert all(0 <= v <= 1 for v in values)
    assert all(v["feature_error"] > 0 for v in alone)
    assert (tmp_path / "bn_rectification.md").read_text().strip() == bn_rectification.render(
        _load(tmp_path / "bn_rectification.json")
    )


def test_command_line_names_the_keras_mode_and_drops_arguments():
    argv = ["/somewhere/benchmarks/int8_study.py", "--seed=1", "--report_only", "--epochs=2"]
    command = bench_utils.command_line(argv, drop=("--report_only",))
    prefix = "" if _keras.IS_KERAS_3 else "TF_USE_LEGACY_KERAS=1 "
    assert command == prefix + "PYTHONPATH=. python benchmarks/int8_study.py --seed=1 --epochs=2"


RESULTS = os.path.join(ROOT, "benchmarks", "results")
# Study -> markdown of its committed JSON, as each script's --render_from writes it.
RENDERERS = {
    "android_latency": lambda path: android_latency.to_markdown(_load(path)),
    "applications": lambda path: applications_report.markdown(
        _load(path), _load(path)[0]["prune_ratio"]
    ),
    "bn_rectification": lambda path: bn_rectification.render(_load(path)),
    "int8_study": lambda path: int8_study.render(bench_utils.read_study(path, "int8_study")),
    "latency_aware": lambda path: latency_aware.render(
        bench_utils.read_study(path, "latency_aware")
    ),
    "projection_cost": lambda path: projection_cost.to_markdown(
        bench_utils.read_study(path, "projection_cost")
    ),
    "rank_allocation": lambda path: rank_allocation.render(_load(path)),
    "rank_check_cost": lambda path: rank_check_cost.to_markdown(_load(path)),
    "tflite_latency": lambda path: tflite_latency_report.to_markdown(
        tflite_latency_report.load(path)
    ),
    "training_step_cost": lambda path: training_step_cost.to_markdown(_load(path)),
}


@pytest.mark.keras_independent
def test_committed_results_one_compact_file_per_study_without_local_paths():
    files = sorted(
        os.path.relpath(os.path.join(folder, name), RESULTS)
        for folder, _, names in os.walk(RESULTS)
        for name in names
    )
    studies = {
        name[: -len(".json")] for name in files if name.endswith(".json") and "/" not in name
    }
    assert studies == set(RENDERERS) | {"accuracy_study"}
    # Besides one JSON and one fragment per study, only the accuracy study's per-run files.
    extra = [f for f in files if f.split(".")[0] not in studies]
    assert all(f.startswith("accuracy_study/") for f in extra), extra
    digests = {}
    for name in files:
        with open(os.path.join(RESULTS, name), "rb") as f:
            content = f.read()
        digest = hashlib.sha256(content).hexdigest()
        assert digest not in digests, f"{name} is a copy of {digests.get(digest)}"
        digests[digest] = name
        local = re.findall(rb"(?:/work|/tmp|/root|/home)/[^\s\"']*", content)
        assert not local, (name, local[:3])
        if name.endswith(".json"):
            assert len(content) < 100_000, (name, len(content))


@pytest.mark.keras_independent
@pytest.mark.parametrize("study", sorted(RENDERERS))
def test_committed_results_render_their_committed_tables(study):
    with open(os.path.join(RESULTS, f"{study}.md"), encoding="utf-8") as f:
        committed = f.read()
    assert RENDERERS[study](os.path.join(RESULTS, f"{study}.json")).rstrip() + "\n" == committed

"""LRPET and SVD training under tf.distribute: Mirrored and MultiWorkerMirrored.

A strategy's devices are fixed when TensorFlow initializes, so each strategy
runs in processes of its own: tests/distribute_worker.py trains (two logical
CPU devices under MirroredStrategy; two worker processes on 127.0.0.1 under
MultiWorkerMirroredStrategy) and records every replica's kernels, the values
each projection started from and where the projection ran. Here the host
checks that every replica holds the same kernel, of rank <= r, equal to a
single-device `lrpet_tf.ops.low_rank_projection` of those values.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import lrpet_tf

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
WORKER = os.path.join(TESTS, "distribute_worker.py")
TIMEOUT = 240  # seconds a worker process may take before it is killed


def worker_env(**extra):
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def from_json(value):
    if isinstance(value, dict):
        if set(value) == {"array", "dtype"}:
            return np.asarray(value["array"], dtype=value["dtype"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def load(path):
    with open(path) as f:
        return from_json(json.load(f))


def case(results, name):
    result = results[name]
    if "error" in result:
        pytest.fail(f"case {name!r} raised in the worker:\n{result['error']}")
    return result


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    output = tmp_path_factory.mktemp("mirrored") / "result.json"
    proc = subprocess.run(
        [sys.executable, WORKER, "mirrored", str(output)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return load(output)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    """Runs two MultiWorkerMirroredStrategy workers; both must exit 0 in time."""
    directory = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs, logs = [], []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        logs.append(directory / f"worker{index}.log")
        with open(logs[-1], "w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, WORKER, "multi_worker", str(directory / f"{index}.json")],
                    env=worker_env(TF_CONFIG=json.dumps(config)),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + TIMEOUT
    hung = []
    for index, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung.append(index)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tails = "\n".join(f"--- worker {i}:\n{log.read_text()[-3000:]}" for i, log in enumerate(logs))
    assert not hung, f"workers {hung} did not finish within {TIMEOUT} s\n{tails}"
    codes = [proc.returncode for proc in procs]
    assert codes == [0, 0], f"exit codes {codes}\n{tails}"
    return [load(directory / f"{index}.json") for index in range(2)]


def matrix_rank(kernel, rtol=1e-5):
    s = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]).astype(np.float64), compute_uv=False)
    return int(np.sum(s > rtol * s[0]))


def host_projection(entry):
    """The single-device projection of a snapshot's kernel and BN statistics."""
    kernel = entry["kernel"]
    matrix = kernel.reshape(-1, kernel.shape[-1])
    scale = None
    if "moving_variance" in entry:
        scale = lrpet_tf.ops.batchnorm_scale(
            entry["gamma"], entry["moving_variance"], entry["epsilon"]
        ).numpy()[None]
    projection = lrpet_tf.ops.low_rank_projection(matrix[None], [entry["rank"]], "scale", scale)
    return projection.matrices.numpy()[0].reshape(kernel.shape)


def assert_projected(after, ranks, before=None, replicas=2):
    """Every replica holds one kernel of rank <= r (the host's projection of `before`)."""
    assert set(after) == set(ranks)
    changed = []
    for name, copies in after.items():
        assert len(copies) == replicas, name
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0], err_msg=name)
        assert matrix_rank(copies[0]) <= ranks[name], name
        if before is not None:
            np.testing.assert_allclose(
                copies[0], host_projection(before[name]), atol=1e-5, err_msg=name
            )
            changed.append(not np.allclose(copies[0], before[name]["kernel"], atol=1e-5))
    if before is not None:
        assert any(changed), "the projection changed nothing; the check would be vacuous"


def test_mirrored_fit_projects_every_replica_identically(mirrored):
    result = case(mirrored, "lrpet")
    assert result["replicas"] == 2
    ranks = result["ranks"]
    assert ranks == {"stem": 4, "conv_a": 8, "conv_b": 8, "shortcut": 4}
    # frequency=3 over 2 epochs of 4 steps: steps 3 and 6, then once at the end.
    assert [record["step"] for record in result["during_fit"]] == [3, 6]
    assert result["projection_count"] == 3
    for record in result["during_fit"]:
        assert_projected(record["after"], ranks, before=record["before"])
    assert_projected(result["after_fit"], ranks)
    assert np.all(np.isfinite(result["loss"]))


def test_mirrored_explicit_project_matches_single_device_projection(mirrored):
    result = case(mirrored, "lrpet")
    explicit = result["explicit"]
    # An epoch without the callback brought the kernels back to full rank.
    before = explicit["before"]
    assert any(matrix_rank(e["kernel"]) > e["rank"] for e in before.values())
    assert_projected(explicit["after"], result["ranks"], before=before)


def test_mirrored_projection_runs_once_on_the_variables_device(mirrored):
    result = case(mirrored, "lrpet")
    devices = result["kernel_devices"]
    primary = {variable for variable, _ in devices.values()}
    # MirroredVariable.device is the first (primary) replica's device.
    assert all(variable == first for variable, first in devices.values())
    assert len(primary) == 1 and primary.pop().endswith("CPU:0")
    # Per group of same-shaped kernels (4 shapes here, each BN-rectified) one
    # batched SVD of the BN-merged matrices (float32) and one float64
    # eigen-decomposition of the kernels' Gram matrices (their own singular
    # values decide "already at rank"), all on that device: the projection
    # runs once and is copied to every replica.
    assert [device for device, _ in result["svd_ops"]] == [devices["stem"][0]] * 4
    assert {dtype for _, dtype in result["svd_ops"]} == {"float32"}
    assert [device for device, _ in result["eig_ops"]] == [devices["stem"][0]] * 4
    assert {dtype for _, dtype in result["eig_ops"]} == {"float64"}


def test_mirrored_mixed_float16_projects_in_float32_after_each_epoch(mirrored):
    result = case(mirrored, "mixed_float16")
    ranks = result["ranks"]
    assert set(result["kernel_dtypes"].values()) == {"float32"}
    assert {dtype for _, dtype in result["svd_ops"]} == {"float32"}
    # frequency="epoch": right after each epoch's last step (4 steps an epoch).
    assert [record["step"] for record in result["during_fit"]] == [4, 8]
    assert result["projection_count"] == 2
    for record in result["during_fit"]:
        assert_projected(record["after"], ranks, before=record["before"])
    assert_projected(result["after_fit"], ranks)
    assert np.all(np.isfinite(result["loss"]))


def hoyer(s):
    s = np.asarray(s, np.float64)
    return np.sum(np.abs(s)) / np.sqrt(np.sum(s**2))


def test_mirrored_svd_training_regularization_prune_and_factorize(mirrored):
    result = case(mirrored, "svd_training")
    assert result["replicas"] == 2
    for losses in result["losses"].values():
        assert np.all(np.isfinite(losses))
    # set_regularization reached both replicas: each reads the new weight and
    # the distributed loss gains lambda_s * sum(hoyer(s)) exactly once.
    weights = result["regularizer_weights"]
    assert weights and all(values == [0.5, 0.5] for values in weights.values())
    expected = 0.5 * sum(hoyer(s) for s in result["s_at_evaluate"].values())
    gained = result["evaluate_on"] - result["evaluate_off"]
    assert gained == pytest.approx(expected, rel=1e-4)
    for name, factors in result["factors"].items():
        for factor, copies in factors.items():
            assert len(copies) == 2
            np.testing.assert_array_equal(copies[1], copies[0], err_msg=f"{name}.{factor}")
    # prune (inside the scope) and factorize (outside) give the same function,
    # with at least one layer split into two thin convolutions.
    full = {name: f["s"][0].shape[0] for name, f in result["factors"].items()}
    assert all(result["pruned_ranks"][n] <= full[n] for n in full)
    assert any(result["pruned_ranks"][n] < full[n] for n in full)
    assert result["compact_layers"].count("Conv2D") > len(full)
    np.testing.assert_allclose(result["compact_output"], result["pruned_output"], atol=1e-4)


def test_multi_worker_workers_end_with_identical_low_rank_kernels(multi_worker):
    first, second = (case(results, "multi_worker") for results in multi_worker)
    assert (first["task"], second["task"]) == (0, 1)
    assert first["replicas"] == second["replicas"] == 2
    assert first["ranks"] == second["ranks"]
    assert first["projection_count"] == second["projection_count"] >= 2
    ranks = first["ranks"]
    for result in (first, second):
        assert_projected(result["after_fit"], ranks, replicas=1)
        assert np.all(np.isfinite(result["loss"]))
    # Both workers hold the same kernels, bit for bit, after each projection
    # during fit and at the end: the first replica's (worker 0's) projection.
    steps = [[r["step"] for r in result["during_fit"]] for result in (first, second)]
    assert steps[0] == steps[1] and steps[0]
    for record in first["during_fit"]:
        assert_projected(record["after"], ranks, before=record["before"], replicas=1)
    pairs = [(a["after"], b["after"]) for a, b in zip(first["during_fit"], second["during_fit"])]
    pairs.append((first["after_fit"], second["after_fit"]))
    for kernels_first, kernels_second in pairs:
        for name in ranks:
            np.testing.assert_array_equal(
                kernels_second[name][0], kernels_first[name][0], err_msg=name
            )
    # Each worker projected on its own first replica's device.
    for result in (first, second):
        devices = {variable for variable, _ in result["kernel_devices"].values()}
        assert len(devices) == 1
        device = devices.pop()
        assert f"/task:{result['task']}/" in device
        assert {d for d, _ in result["svd_ops"]} == {device}


def test_recalibrate_batchnorm_under_mirrored_strategy(mirrored):
    result = case(mirrored, "recalibrate")
    assert set(result["replicas"]) == {"stem_bn", "bn_a", "bn_b", "bn_s"}
    for name, stats in result["replicas"].items():
        for key in ("mean", "variance"):
            copies = stats[key]
            assert len(copies) == 2
            np.testing.assert_array_equal(copies[0], copies[1])
            np.testing.assert_allclose(copies[0], result["single"][name][key], rtol=1e-5, atol=1e-6)

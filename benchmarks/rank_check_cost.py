"""What deciding "already at rank" costs in a BN-rectified LRPET projection (issue 18).

A BN-rectified projection needs each kernel's own singular values (the
BN-merged matrix's cannot tell its numerical rank when the BN scale spans many
orders of magnitude). Before, they came from a second, values-only float32 SVD
of every kernel; now from the eigenvalues of each kernel's smaller Gram
matrix in float64. This times, interleaved in one run, one whole projection
(`LRPET.project()` on a model whose BN statistics are random), the two ways
of getting the kernels' own singular values on the same matrices, and reports
the share of a projection each takes. CPU time of this process, median of
the rounds.

    PYTHONPATH=. python benchmarks/rank_check_cost.py            # ResNet-56 and ResNet50
    PYTHONPATH=. python benchmarks/rank_check_cost.py --smoke    # seconds
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

import lrpet_tf  # noqa: E402

NAME = "rank_check_cost"
FLAGS = flags.FLAGS


def _random_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, lrpet_tf.keras.layers.BatchNormalization):
            n = layer.moving_variance.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))


def measure(name, model, rounds):
    """Interleaved CPU times of a projection and of the two rank checks, in ms."""
    _random_batchnorm(model)
    cb = lrpet_tf.LRPET(prune_ratio=0.5, verbose=0)
    cb.set_model(model)
    cb.prepare(model)
    groups = {}
    for layer in model.layers:
        if layer.name in cb.ranks:
            kernel = layer.kernel.numpy()
            groups.setdefault(lrpet_tf.ops.matrix_shape(kernel.shape), []).append(
                np.reshape(kernel, lrpet_tf.ops.matrix_shape(kernel.shape))
            )
    matrices = [tf.constant(np.stack(g)) for g in groups.values()]

    @tf.function
    def second_svd():
        return [tf.linalg.svd(m, compute_uv=False) for m in matrices]

    @tf.function
    def gram_eigenvalues():
        out = []
        for m in matrices:
            m = tf.cast(m, tf.float64)
            rows, cols = m.shape[-2], m.shape[-1]
            gram = tf.matmul(m, m, adjoint_a=rows >= cols, adjoint_b=rows < cols)
            out.append(tf.sqrt(tf.maximum(tf.linalg.eigvalsh(gram), 0.0)))
        return out

    weights = model.get_weights()
    cpu = {}
    bench_utils.interleaved_times(
        {
            "projection": cb.project,
            "second_svd": lambda: [t.numpy() for t in second_svd()],
            "gram": lambda: [t.numpy() for t in gram_eigenvalues()],
        },
        rounds=rounds,
        warmup=1,
        before={"projection": lambda: model.set_weights(weights)},
        cpu_times=cpu,
    )
    ms = {k: float(np.median(v) * 1e3) for k, v in cpu.items()}
    before = ms["projection"] - ms["gram"] + ms["second_svd"]
    return {
        "model": name,
        "layers": len(cb.ranks),
        "groups": len(matrices),
        "projection_ms": ms["projection"],
        "second_svd_ms": ms["second_svd"],
        "gram_ms": ms["gram"],
        "share_before": ms["second_svd"] / before,
        "share_now": ms["gram"] / ms["projection"],
        "speedup": before / ms["projection"],
    }


def main(argv):
    del argv
    if FLAGS.smoke:
        cases = [("tiny", bench_models.tiny_cnn())]
        rounds = 2
    else:
        cases = [
            ("ResNet-56", bench_models.cifar_resnet(9)),
            ("ResNet50", bench_models.resnet50()),
        ]
        rounds = FLAGS.rounds
    rows = [measure(name, model, rounds) for name, model in cases]
    payload = {
        "command": bench_utils.command_line(),
        "machine": bench_utils.machine_info(),
        "rows": rows,
    }
    markdown = to_markdown(payload)
    if not FLAGS.smoke:
        bench_utils.write_results(NAME, payload, markdown)
    print(markdown)


def to_markdown(payload):
    """The table of a results payload (`--render_from` of the committed JSON gives the same)."""
    headers = [
        "model",
        "convs",
        "shape groups",
        "projection (ms CPU)",
        "second SVD (before)",
        "Gram eigenvalues (now)",
        "share before",
        "share now",
        "projection speedup",
    ]
    table = bench_utils.markdown_table(
        headers,
        [
            [
                r["model"],
                r["layers"],
                r["groups"],
                r["projection_ms"],
                r["second_svd_ms"],
                r["gram_ms"],
                f"{100 * r['share_before']:.0f}%",
                f"{100 * r['share_now']:.0f}%",
                f"{r['speedup']:.2f}x",
            ]
            for r in payload["rows"]
        ],
    )
    return "\n".join(
        [
            f"Command: `{payload['command']}`",
            "",
            bench_utils.machine_markdown(payload["machine"]),
            "",
            table,
        ]
    )


if __name__ == "__main__":
    flags.DEFINE_bool("smoke", False, "A tiny CNN, 2 rounds.")
    flags.DEFINE_integer("rounds", 7, "Timed rounds.")
    sys.exit(app.run(main))

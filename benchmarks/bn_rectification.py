"""Why LRPET's BN rectification costs accuracy when it projects a trained model (issue 15).

Scenario B of the accuracy study starts from one projection of the committed
dense ResNet-20. Without energy transfer, plain truncation of each kernel
keeps 70.0% test accuracy at g = 0.5; the BN-rectified projection (the
merged kernel `W * a`, `a = gamma / sqrt(var + eps)`, projected and
un-merged) keeps 30.6%, although it is the better rank-r approximation of
every merged kernel. This probe splits that gap, with both projections
computed by `lrpet_tf.LRPET(energy_transfer=None)`:

- Test accuracy with every kernel projected plain, rectified, and plain
  except one group of convs rectified (grouped by output channels, which are
  ResNet-20's stages).
- Test accuracy with only one group projected (the rest dense), each way.
- Per projected conv, on training images (means over each group): the
  relative error of the merged kernel itself, where the rectified projection
  is optimal; of the BN output `a * (conv(x) - mean)` for the conv's exact
  inputs; of the output of the layer after the BN (a ReLU, or the residual
  Add), that conv alone projected; the correlation across channels
  between a channel's relative BN-output error and its `a`; and, with the
  whole group projected (the rest dense), the relative error of what the
  classifier takes (the pooled features), where the group's errors have
  composed.

Results: `benchmarks/results/bn_rectification.{json,md}` (RESULTS.md section 1).

Usage:
    PYTHONPATH=. python benchmarks/bn_rectification.py             # ~3 min
    PYTHONPATH=. python benchmarks/bn_rectification.py --smoke     # seconds
    PYTHONPATH=. python benchmarks/bn_rectification.py \\
        --render_from=benchmarks/results/bn_rectification.json     # the tables only
"""

import dataclasses
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.bn_rectification
    import accuracy_study
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import accuracy_study
    from benchmarks import bench_models
    from benchmarks import bench_utils

bench_utils.add_examples_to_path()

import example_data  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402

__all__ = ["ProbeConfig", "render", "run"]

NAME = "bn_rectification"


@dataclasses.dataclass
class ProbeConfig:
    """What `run` probes.

    Attributes:
        dense_model: A trained `.keras` model (default: the accuracy study's
            committed ResNet-20).
        dataset: `"fashion_mnist"` or `"digits"`.
        train_images: The training subset the model was trained on (its mean
            and std normalise the images): the accuracy study's 10,000.
        levels: LRPET's `prune_ratio` values g.
        exclude: Convs left dense, as `LRPET(exclude=...)`.
        images: Training images the layer errors are measured on.
        command: The command line, for the report.
    """

    dense_model: str = accuracy_study.DENSE_MODEL
    dataset: str = "fashion_mnist"
    train_images: int = 10000
    levels: tuple = (0.5, 0.75)
    exclude: tuple = ("stem",)
    images: int = 512
    command: str = None

    def __post_init__(self):
        if not os.path.exists(self.dense_model):
            raise ValueError(
                f"`dense_model` does not exist. Received: dense_model={self.dense_model!r}"
            )
        for level in self.levels:
            if not 0 < level < 1:
                raise ValueError(f"Expected every level in (0, 1). Received: levels={self.levels}")
        if self.images < 2:
            raise ValueError(f"Expected `images` >= 2. Received: images={self.images}")


def _projected(config, level, rectified):
    model = example_training.load_model(config.dense_model)
    callback = lrpet_tf.LRPET(
        prune_ratio=level,
        exclude=list(config.exclude),
        energy_transfer=None,
        bn_rectification=rectified,
        verbose=0,
    )
    callback.set_model(model)
    callback.project()
    return model, callback


def _with_kernels(config, sources):
    """The dense model with each named layer's kernel taken from `sources[name]`."""
    model = example_training.load_model(config.dense_model)
    for name, source in sources.items():
        model.get_layer(name).kernel.assign(source.get_layer(name).kernel)
    return model


def _relative_error(value, reference):
    """`||value - reference|| / ||reference||` (Frobenius), as a float."""
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def _layer_errors(layer, batchnorm, x, kernels):
    """Errors of each projected kernel in the BN output of `layer` for inputs `x`."""
    a = np.asarray(
        lrpet_tf.ops.batchnorm_scale(batchnorm.gamma, batchnorm.moving_variance, batchnorm.epsilon)
    )
    kernel = layer.kernel.numpy()
    y0 = np.asarray(layer.convolution_op(x, kernel)).reshape(-1, a.size)
    reference = a * (y0 - batchnorm.moving_mean.numpy())
    merged = kernel.reshape(-1, a.size) * a
    out = {"channels": int(a.size), "scale_spread": float(a.max() / a.min())}
    for label, projected in kernels.items():
        error = a * (np.asarray(layer.convolution_op(x, projected)).reshape(-1, a.size) - y0)
        channel = np.linalg.norm(error, axis=0) / np.linalg.norm(reference, axis=0)
        out[label] = {
            "output_error": float(np.linalg.norm(error) / np.linalg.norm(reference)),
            "merged_kernel_error": _relative_error(projected.reshape(-1, a.size) * a, merged),
            "scale_error_correlation": float(np.corrcoef(a, channel)[0, 1]),
        }
    return out


def _errors_after(dense, pairs, x, kernels_by_layer):
    """Relative error at the output of each BN's consumer, that conv alone projected."""
    graph = lrpet_tf.LayerGraph(dense)  # the edges LRPET pairs each conv with its BN by
    consumers = []
    for bn in pairs.values():
        (call,) = graph.calls(dense.get_layer(bn))  # a rectified BN is called once
        (consumer,) = graph.consumers(call)  # a ReLU or a residual Add in a ResNet
        consumers.append(consumer.layer)
    probe = keras.Model(dense.inputs, [layer.output for layer in consumers])
    reference = probe.predict(x, verbose=0)
    errors = {}
    for i, name in enumerate(pairs):
        kernel = dense.get_layer(name).kernel
        original = kernel.numpy()
        errors[name] = {}
        for label, projected in kernels_by_layer[name].items():
            kernel.assign(projected)
            out = probe.predict(x, verbose=0)[i]
            errors[name][label] = _relative_error(out, reference[i])
        kernel.assign(original)
    return errors


def _accuracy_with(config, images, sources):
    return example_training.accuracy(_with_kernels(config, sources), images)


def _features(model, x):
    """What the model's last layer (the classifier) takes, for inputs `x`."""
    return keras.Model(model.inputs, model.layers[-1].input).predict(x, verbose=0)


def _group_alone(config, images, x, names, source, reference):
    """Test accuracy and relative feature error with only `names` projected (from `source`)."""
    model = _with_kernels(config, {name: source for name in names})
    features = _features(model, x)
    return {
        "accuracy": example_training.accuracy(model, images),
        "feature_error": _relative_error(features, reference),
    }


def probe_level(config, images, level):
    """Accuracies and per-layer errors of both projections at one g."""
    plain, callback = _projected(config, level, rectified=False)
    rectified, rectified_callback = _projected(config, level, rectified=True)
    models = {"plain": plain, "rectified": rectified}
    pairs = rectified_callback.rectified_layers
    dense = example_training.load_model(config.dense_model)
    x = images.x_train[: config.images]
    layers = [dense.get_layer(name) for name in pairs]
    inputs = keras.Model(dense.inputs, [layer.input for layer in layers]).predict(x, verbose=0)
    kernels = {
        name: {label: m.get_layer(name).kernel.numpy() for label, m in models.items()}
        for name in pairs
    }
    after = _errors_after(dense, pairs, x, kernels)
    errors = {}
    for layer, layer_inputs in zip(layers, inputs):
        batchnorm = dense.get_layer(pairs[layer.name])
        errors[layer.name] = _layer_errors(layer, batchnorm, layer_inputs, kernels[layer.name])
        for label, value in after[layer.name].items():
            errors[layer.name][label]["error_after_consumer"] = value
    groups = {}
    for name, row in errors.items():
        groups.setdefault(row["channels"], []).append(name)
    accuracy = {label: example_training.accuracy(m, images) for label, m in models.items()}
    reference = _features(dense, x)
    swapped, alone = {}, {}
    for channels, names in sorted(groups.items()):
        sources = {name: plain for name in callback.ranks}
        sources.update({name: rectified for name in names})
        swapped[str(channels)] = _accuracy_with(config, images, sources)
        alone[str(channels)] = {
            label: _group_alone(config, images, x, names, m, reference)
            for label, m in models.items()
        }
    return {
        "level": level,
        "ranks": dict(callback.ranks),
        "accuracy": accuracy,
        "rectified_group_accuracy": swapped,
        "group_alone_accuracy": alone,
        "groups": {str(c): names for c, names in sorted(groups.items())},
        "layers": errors,
    }


def run(config=None, smoke=False, output_dir=None, log=print):
    """Probes each level; writes `bn_rectification.{json,md}` to `output_dir`.

    Smoke mode trains a width-4 ResNet-8 on the 8x8 digits for one epoch,
    saves it in `output_dir` (required then) and probes it at g = 0.5.
    """
    if smoke and not output_dir:
        raise ValueError("Smoke mode writes its model to `output_dir`; give one.")
    if smoke:
        images = example_data.load_dataset("digits", standardize=True)
        keras.utils.set_random_seed(0)
        model = bench_models.cifar_resnet(
            1, images.input_shape, images.num_classes, width=4, shortcut="zeros"
        )
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images.x_train, images.y_train, epochs=1, batch_size=64, verbose=0)
        path = os.path.join(output_dir, "smoke_dense.keras")
        model.save(path)
        config = ProbeConfig(dense_model=path, dataset="digits", train_images=None, levels=(0.5,))
    config = config or ProbeConfig()
    images = example_data.load_dataset(
        config.dataset, train_limit=config.train_images, standardize=True
    )
    payload = {
        "command": config.command or bench_utils.command_line(),
        "dense_model": "smoke"
        if smoke
        else os.path.relpath(config.dense_model, bench_utils.REPO_DIR),
        "images": config.images,
        "dense_accuracy": example_training.accuracy(
            example_training.load_model(config.dense_model), images
        ),
        "levels": [probe_level(config, images, level) for level in config.levels],
    }
    markdown = render(payload)
    bench_utils.write_results(NAME, payload, markdown, output_dir=output_dir, compact=True)
    log(markdown)
    return payload


def _mean(rows, label, key):
    return float(np.mean([row[label][key] for row in rows]))


def render(payload):
    """The report's tables (`--render_from` of the committed JSON gives the same)."""
    lines = [
        f"Command: `{payload['command']}`",
        "",
        f"Dense model: {payload['dense_accuracy']:.2%} test accuracy. Both projections "
        "without energy transfer; layer errors on "
        f"{payload['images']} training images, each conv alone with its exact inputs.",
        "",
    ]
    accuracy_rows, error_rows = [], []
    for entry in payload["levels"]:
        g, acc = entry["level"], entry["accuracy"]
        accuracy_rows.append(
            [g, "every projected conv", f"{acc['plain']:.2%}", f"{acc['rectified']:.2%}"]
        )
        for channels, value in entry["group_alone_accuracy"].items():
            accuracy_rows.append(
                [
                    g,
                    f"only the {channels}-channel convs",
                    f"{value['plain']['accuracy']:.2%}",
                    f"{value['rectified']['accuracy']:.2%}",
                ]
            )
        for channels, value in entry["rectified_group_accuracy"].items():
            accuracy_rows.append(
                [g, f"every conv, the {channels}-channel ones rectified", "", f"{value:.2%}"]
            )
        for channels, names in entry["groups"].items():
            rows = [entry["layers"][name] for name in names]
            spreads = [r["scale_spread"] for r in rows]
            alone = entry["group_alone_accuracy"][channels]
            error_rows.append(
                [g, f"{channels} ({len(names)})", f"{min(spreads):.1f}-{max(spreads):.1f}x"]
                + [
                    f"{_mean(rows, 'plain', key):{spec}} / {_mean(rows, 'rectified', key):{spec}}"
                    for key, spec in (
                        ("merged_kernel_error", ".3f"),
                        ("output_error", ".3f"),
                        ("error_after_consumer", ".3f"),
                        ("scale_error_correlation", "+.2f"),
                    )
                ]
                + [
                    f"{alone['plain']['feature_error']:.3f} / "
                    f"{alone['rectified']['feature_error']:.3f}"
                ]
            )
    lines.append(
        bench_utils.markdown_table(
            ["g", "projected", "test acc., plain", "rectified"], accuracy_rows
        )
    )
    lines.append("")
    lines.append(
        bench_utils.markdown_table(
            [
                "g",
                "conv channels (convs)",
                "a spread (max/min)",
                "merged-kernel error, plain / rectified",
                "BN-output error",
                "error after the next layer (ReLU or Add)",
                "corr(a, channel error)",
                "classifier-input error, the group alone projected",
            ],
            error_rows,
        )
    )
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.smoke:
        with tempfile.TemporaryDirectory() as folder:
            run(smoke=True, output_dir=folder)
        return
    if FLAGS.render_from:
        with open(FLAGS.render_from) as f:
            print(render(json.load(f)))
        return
    config = ProbeConfig(
        dense_model=FLAGS.dense_model or accuracy_study.DENSE_MODEL,
        levels=tuple(float(g) for g in FLAGS.levels),
        images=FLAGS.images,
        command=bench_utils.command_line(),
    )
    run(config)


FLAGS = flags.FLAGS

if __name__ == "__main__":
    flags.DEFINE_string("dense_model", None, "Trained .keras model (default: the study's).")
    flags.DEFINE_list("levels", ["0.5", "0.75"], "prune_ratio values g.")
    flags.DEFINE_integer("images", 512, "Training images the layer errors are measured on.")
    flags.DEFINE_string("render_from", None, "Print the tables of a results JSON and exit.")
    flags.DEFINE_bool("smoke", False, "A width-4 ResNet-8 on digits, one epoch, in a temp folder.")
    sys.exit(app.run(main))

"""Export any .keras model to a verified, compact .tflite file and time it.

Takes a `.keras` file of any kind these examples (or you) write: a dense
model, an LRPET-trained (dense-projected) one, an SVD-training one, or one
already factorized. Each conv/dense kernel of low numerical rank (LRPET's
projected kernels) and each SVD-form layer becomes two thin standard layers
(`lrpet_tf.factorize`), BatchNormalization is folded
(`lrpet_tf.fold_batchnorm`), and `lrpet_tf.export_tflite` writes the file
with the chosen quantization and checks it against Keras in the LiteRT
interpreter. Then the file's latency is measured (median of `--runs`
invokes on `--num_threads` threads, XNNPACK on CPU), and that of the
unfactorized model for comparison when something was factorized.

    python examples/export_tflite.py \\
        --model_path=saved_models/lrpet_small_cnn_digits_g0.6/trained.keras
    python examples/export_tflite.py --model_path=m.keras --quantization=int8 --dataset=digits
    TF_USE_LEGACY_KERAS=1 python examples/export_tflite.py --model_path=m.keras \\
        --dataset=digits --qat_epochs=2
    python examples/export_tflite.py --model_path=m.keras --dataset=digits \\
        --quantization=int8 --io_type=uint8 --labels=labels.txt --std=16

`--dataset` gives real images for verification (test images), int8
calibration (training images) and the file's top-1 accuracy on the test set;
without it, verification uses random inputs. Writes `<output>` (default: next
to the model, `<name>_<quantization>.tflite`) and `<output without
.tflite>.json`.

`--qat_epochs=N` adds int8 for Android by both routes, on the compact
(factorized, BN-folded) model: post-training int8 calibrated on training
images (`<stem>_int8.tflite`) and quantization-aware training
(`lrpet_tf.export.prepare_qat`, N epochs of fine-tuning on `--dataset`, then
int8 without calibration data: `<stem>_qat_int8.tflite`, the fine-tuning in
`<stem>_qat_int8/`). One table compares float and int8 accuracy, size and latency.
QAT needs tf_keras: run with `TF_USE_LEGACY_KERAS=1` and a model saved by
tf_keras (train it with `TF_USE_LEGACY_KERAS=1` too; tf_keras cannot read a
Keras 3 `.keras` file). In Keras 3 mode the flag fails at startup with the
library's message.

The files are ready for an Android app (docs/android.md): a static batch of
`--batch_size` (default 1; 0 for a dynamic batch), outputs named after the
model's output layers, `--io_type=int8|uint8` for integer input and output
tensors in the int8 files (the `--quantization=int8` file and, with
`--qat_epochs`, the post-training and QAT ones), and with `--labels` (a text
file, one class name a line) TFLite image-classifier metadata: the labels,
the normalization `(pixel - --mean) / --std` and the model's name.

From Python: `run(ExportConfig(model_path=...))` returns the results dict.
"""

import dataclasses
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import example_console  # noqa: E402

if __name__ == "__main__":
    # Before TensorFlow is imported: keeps its C++ start-up lines off the console.
    example_console.quiet_tensorflow_startup()

import example_config  # noqa: E402
import example_export  # noqa: E402
import example_flags  # noqa: E402
import example_reports  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402

__all__ = ["ExportConfig", "export_and_time", "quantize_for_android", "run"]

FLAGS = flags.FLAGS
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
_ACCURACY_LIMIT = 10_000  # test images a file's accuracy is measured on, at most
IO_TYPES = ("float32", "int8", "uint8")


@dataclasses.dataclass
class ExportConfig(example_config.DataSettings):
    """Everything a run of export_tflite depends on (the flags have the same names).

    The data fields are `example_config.DataSettings`' (`dataset` None by
    default here: random verification inputs).

    Attributes:
        model_path: The `.keras` model.
        output: The .tflite path (default `<model dir>/<name>_<quantization>.tflite`).
        quantization: `"float32"`, `"float16"`, `"dynamic"` or `"int8"`.
        dataset: Images for verification, calibration and accuracy (None:
            random inputs; prepare them as for training).
        num_threads, runs, warmup: Latency measurement.
        compare: Also export and time the unfactorized (BN-folded) model,
            when the model has low-rank kernels to factorize.
        qat_epochs: If > 0, also write post-training int8 and
            quantization-aware int8 files of the compact model, after this
            many epochs of QAT fine-tuning on `dataset` (needs tf_keras).
        qat_learning_rate: Peak learning rate of the QAT fine-tuning (SGD
            with momentum, cosine decay: the `finetune` recipe).
        qat_batch_size, verbose: The QAT fine-tuning's `fit` settings.
        batch_size: The files' static batch (None or 0: a dynamic batch).
        io_type: Input/output tensor type of the int8 files: `"float32"`,
            `"int8"` or `"uint8"` (needs an int8 file: `quantization="int8"`
            or `qat_epochs`).
        labels: A text file of class names, one a line: the files get TFLite
            image-classifier metadata with them (needs one image input and
            one `[batch, classes]` output).
        mean, std: The metadata's input normalization, `(pixel - mean) / std`.
    """

    model_path: str = None
    output: str = None
    quantization: str = "float32"
    dataset: str = None
    num_threads: int = 1
    runs: int = 50
    warmup: int = 10
    compare: bool = True
    qat_epochs: int = 0
    qat_learning_rate: float = 1e-3
    qat_batch_size: int = 64
    verbose: int = 2
    batch_size: int = 1
    io_type: str = "float32"
    labels: str = None
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if not self.model_path:
            raise ValueError("`model_path` (a .keras model) is required.")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"Expected `quantization` in {QUANTIZATIONS}. "
                f"Received: quantization={self.quantization!r}"
            )
        if self.quantization == "int8" and not self.dataset:
            raise ValueError("int8 calibration needs real images: give `dataset`.")
        if self.qat_epochs < 0:
            raise ValueError(f"Expected `qat_epochs` >= 0. Received: qat_epochs={self.qat_epochs}")
        if self.qat_epochs and not self.dataset:
            raise ValueError(
                "Quantization-aware training fine-tunes on real images: give `dataset`. "
                f"Received: qat_epochs={self.qat_epochs}, dataset=None"
            )
        if self.batch_size == 0:
            self.batch_size = None  # the flag's way of saying "dynamic"
        if self.batch_size is not None and self.batch_size < 0:
            raise ValueError(
                "Expected `batch_size` >= 1 (or 0 / None for a dynamic batch). "
                f"Received: batch_size={self.batch_size}"
            )
        if self.io_type not in IO_TYPES:
            raise ValueError(
                f"Expected `io_type` in {IO_TYPES}. Received: io_type={self.io_type!r}"
            )
        if self.io_type != "float32" and self.quantization != "int8" and not self.qat_epochs:
            raise ValueError(
                "`io_type` sets the I/O tensors of int8 files: give quantization=int8 or "
                f"qat_epochs. Received: io_type={self.io_type!r}, "
                f"quantization={self.quantization!r}, qat_epochs={self.qat_epochs}"
            )
        if self.labels is not None and not os.path.isfile(self.labels):
            raise ValueError(f"`labels` is not a file. Received: labels={self.labels!r}")

    def export_options(self, quantization, name):
        """`export_tflite` arguments of this run for a file of `quantization`.

        Args:
            quantization: The file's quantization (as `export_and_time` names it).
            name: The model name written into the metadata.
        """
        options = {"batch_size": self.batch_size}
        if quantization in ("int8", "qat_int8"):
            options["io_type"] = self.io_type
        if self.labels:
            with open(self.labels, encoding="utf-8") as f:
                labels = [line.strip() for line in f if line.strip()]
            options["metadata"] = lrpet_tf.export.ImageClassifierMetadata(
                labels=labels, mean=self.mean, std=self.std, name=name
            )
        return options

    def output_path(self, quantization=None):
        """The .tflite path of the run's file, or of another `quantization` next to it."""
        if self.output and quantization is None:
            return self.output
        if self.output:
            stem = os.path.splitext(self.output)[0]
            stem = stem[: -len(self.quantization) - 1] if stem.endswith(self.quantization) else stem
        else:
            stem = os.path.splitext(self.model_path)[0]
        return f"{stem}_{quantization or self.quantization}.tflite"


def export_and_time(model, path, quantization, config, data=None, macs_model=None):
    """Exports one verified .tflite file, times it and measures its accuracy.

    A file that fails verification is kept and reported (`verified` False and
    the `error`), so that one bad quantization does not lose the others.

    Args:
        model: The Keras model to convert (a QAT model for `"qat_int8"`).
        path: The .tflite path.
        quantization: `"float32"`, `"float16"`, `"dynamic"`, `"int8"`
            (post-training, calibrated on training images) or `"qat_int8"`
            (a `prepare_qat` model: int8 without calibration data).
        config: The `ExportConfig` (latency settings).
        data: The `example_data.Dataset`, or None (random verification
            inputs, no accuracy).
        macs_model: The model whose MACs to report (default `model`).

    Returns:
        A dict: `path`, `bytes`, `quantization`, `verified`, `max_error`,
        `tolerance`, `top1_agreement` and `max_error_steps` (int8), op
        counts, `latency_ms` (median/mean/p90/min), `macs` and, with data,
        `accuracy` (top-1 on the test set).
    """
    converter_quantization = {"float32": None, "qat_int8": "int8"}.get(quantization, quantization)
    name = os.path.splitext(os.path.basename(config.model_path))[0]
    steps = example_console.Progress(2 if data is None else 3, estimate=False)
    checked_on = "random inputs" if data is None else f"{min(64, data.num_test)} test images"
    steps.start(f"convert to {os.path.basename(path)} and verify against Keras on {checked_on}")
    info = example_export.export_file(
        model,
        path,
        converter_quantization,
        data,
        seed=config.seed,
        **config.export_options(quantization, name),
    )
    info["quantization"] = quantization
    steps.start(
        f"latency: {config.runs} runs after {config.warmup} warm-up, "
        f"{example_console.plural(config.num_threads, 'thread')}"
    )
    latency = lrpet_tf.measure_latency(
        path,
        num_threads=config.num_threads,
        runs=config.runs,
        warmup=config.warmup,
        batch_size=config.batch_size or 1,
    )
    info.update(
        ops=sum(info["op_counts"].values()),
        latency_ms=dataclasses.asdict(latency),
        macs=lrpet_tf.model_report(macs_model or model).total_macs,
    )
    if data is not None:
        steps.start(f"accuracy on {min(data.num_test, _ACCURACY_LIMIT)} test images")
        info["accuracy"] = example_training.tflite_accuracy(path, data, _ACCURACY_LIMIT)
    return info


def run(config=None, **changes):
    """Factorizes, folds, exports, verifies and times one model.

    Returns:
        A dict: `model_path`, `kind` ("svd", "low-rank" or "dense"),
        `factorized` (layer names), `tflite` (the file: path, bytes,
        max_error, op counts, MACs, `latency_ms` with median/mean/p90/min,
        accuracy with a dataset) and, with `compare`, `reference` (the same
        for the unfactorized model) and `speedup` (reference / compact median
        latency). With `qat_epochs`, also `ptq_int8` (post-training int8,
        unless `quantization` is already int8), `qat_int8` (the same for the
        QAT file) and `qat` (epochs, learning rate, history, seconds).

    Raises:
        RuntimeError: With `qat_epochs` in Keras 3 mode, at once (the
            library's message says to set TF_USE_LEGACY_KERAS=1).
    """
    if config is None:
        config = ExportConfig(model_path=changes.pop("model_path", None))
    config = dataclasses.replace(config, **changes)
    if config.qat_epochs:
        example_export.check_qat_available()  # before any slow work
    model = example_training.load_model(config.model_path)
    has_svd = bool([layer for layer in model.layers if isinstance(layer, svd_training.SVDLayer)])
    compact, report = lrpet_tf.factorize(model, return_report=True)
    factorized = report.by_action("factorized")
    kind = "svd" if has_svd else ("low-rank" if factorized else "dense")
    data = config.load_data() if config.dataset else None
    path = config.output_path()
    folded = lrpet_tf.fold_batchnorm(compact)
    compare = config.compare and kind == "low-rank"
    stages = example_console.Stages(
        1 + compare + (3 if config.quantization != "int8" else 2) * bool(config.qat_epochs)
    )
    results = {
        "model_path": config.model_path,
        "config": dataclasses.asdict(config),
        "kind": kind,
        "factorized": factorized,
    }
    compact_name = (
        f"compact model ({example_console.plural(len(factorized), 'layer')} factorized, BN folded)"
    )
    with stages.stage(compact_name, config.quantization):
        results["tflite"] = export_and_time(folded, path, config.quantization, config, data)
    if compare:
        # The same model unfactorized (an SVD-form model has no dense form to compare).
        with stages.stage("reference model (unfactorized, BN folded)", config.quantization):
            reference = lrpet_tf.fold_batchnorm(model)
            with tempfile.TemporaryDirectory() as tmp:
                results["reference"] = export_and_time(
                    reference,
                    os.path.join(tmp, "reference.tflite"),
                    config.quantization,
                    config,
                    data,
                )
        results["reference"]["path"] = None
        results["speedup"] = (
            results["reference"]["latency_ms"]["median_ms"]
            / results["tflite"]["latency_ms"]["median_ms"]
        )
    if config.qat_epochs:
        results.update(quantize_for_android(folded, config, data, stages))
    results["stages"] = stages.rows
    example_reports.write_json(os.path.splitext(path)[0] + ".json", results)
    print(str(report))
    print()
    print(_table(results))
    print()
    print(stages.summary())
    return results


def quantize_for_android(folded, config, data, stages=None):
    """Post-training int8 and quantization-aware int8 files of the compact model.

    Args:
        folded: The compact model (factorized, BN folded).
        config: The `ExportConfig` (`qat_epochs` >= 1, `qat_learning_rate`, ...).
        data: The `example_data.Dataset` (training images for calibration and
            fine-tuning, test images for verification and accuracy).
        stages: The run's `example_console.Stages` (the headers of the
            post-training int8 file, the QAT fine-tuning and the QAT file);
            default: headers numbered from 1.

    Returns:
        A dict with `qat_int8` and `qat` (and `ptq_int8` unless the run's
        main file is already post-training int8), as `run` returns them.
    """
    if stages is None:
        stages = example_console.Stages(3 if config.quantization != "int8" else 2)
    results = {}
    if config.quantization != "int8":
        with stages.stage(
            "compact model, post-training int8",
            f"calibrated on {min(256, data.num_train)} training images",
        ):
            results["ptq_int8"] = export_and_time(
                folded, config.output_path("int8"), "int8", config, data
            )
    stage_dir = os.path.splitext(config.output_path("qat_int8"))[0]
    start = time.perf_counter()
    with stages.stage(
        "quantization-aware training", example_console.plural(config.qat_epochs, "epoch")
    ):
        qat_model, stage = example_export.quantization_aware_training(
            folded,
            data,
            config.qat_epochs,
            stage_dir,
            learning_rate=config.qat_learning_rate,
            batch_size=config.qat_batch_size,
            seed=config.seed,
            verbose=config.verbose,
        )
        results["qat"] = {
            "epochs": config.qat_epochs,
            "learning_rate": config.qat_learning_rate,
            "train_images": data.num_train,
            "seconds": time.perf_counter() - start,
            "keras_accuracy": example_training.accuracy(qat_model, data),  # fake-quantized
            "history": stage["history"],
        }
    with stages.stage("compact model, QAT int8"):
        results["qat_int8"] = export_and_time(
            qat_model, stage_dir + ".tflite", "qat_int8", config, data, macs_model=folded
        )
    return results


_ROWS = (
    ("compact (factorized)", "tflite"),
    ("compact, post-training int8", "ptq_int8"),
    ("compact, QAT int8", "qat_int8"),
    ("reference (unfactorized)", "reference"),
)


def _table(results):
    rows = []
    for label, key in _ROWS:
        info = results.get(key)
        if info is None:
            continue
        rows.append(
            [
                label,
                info["quantization"],
                info["macs"],
                info["bytes"],
                info["conv2d_ops"],
                info.get("max_error"),
                info["latency_ms"]["median_ms"],
                None if info.get("accuracy") is None else 100 * info["accuracy"],
            ]
        )
    text = example_reports.format_table(
        [
            "model",
            "quantization",
            "MACs",
            "bytes",
            "CONV_2D ops",
            "max |TFLite-Keras|",
            "median ms",
            "accuracy %",
        ],
        rows,
        title=f"{results['tflite']['path']} ({results['kind']} model, "
        f"{results['tflite']['quantization']}, "
        f"{results['tflite']['latency_ms']['num_threads']} thread(s))",
    )
    if "speedup" in results:
        text += f"\nmeasured speedup {results['speedup']:.2f}x"
    for key in ("ptq_int8", "qat_int8"):
        info = results.get(key)
        if info is not None and not info["verified"]:
            text += f"\n{key}: verification failed: {info['error']}"
    if "qat_int8" in results:
        float_bytes = results["tflite"]["bytes"]
        text += (
            f"\nQAT: {results['qat']['epochs']} epoch(s) on {results['qat']['train_images']} "
            f"training images; int8 file {float_bytes / results['qat_int8']['bytes']:.2f}x "
            f"smaller than the {results['tflite']['quantization']} one"
        )
    return text


def define_flags():
    """The script's flags (defined only when run as a script)."""
    example_console.define_flags()
    flags.declare_key_flag("tf_logs")  # listed in this script's --help
    flags.DEFINE_string("model_path", None, "The .keras model to export.", required=True)
    flags.DEFINE_string("output", None, "The .tflite path (default: next to the model).")
    flags.DEFINE_enum("quantization", "float32", QUANTIZATIONS, "Quantization of the file.")
    # --dataset (default none: random verification inputs), how to read it
    # (prepare it as in training) and --seed (QAT data order, calibration sample).
    example_flags.define_data_flags(default_dataset=None, model_flags=False)
    flags.DEFINE_integer("num_threads", 1, "Interpreter threads for the latency measurement.")
    flags.DEFINE_integer("runs", 50, "Timed invokes (the median is reported).")
    flags.DEFINE_integer("warmup", 10, "Untimed invokes first.")
    flags.DEFINE_bool("compare", True, "Also time the unfactorized model.")
    flags.DEFINE_integer(
        "qat_epochs",
        0,
        "If > 0: also post-training int8 and quantization-aware int8 after this many epochs "
        "of QAT fine-tuning on --dataset (needs TF_USE_LEGACY_KERAS=1).",
        lower_bound=0,
    )
    flags.DEFINE_float("qat_learning_rate", 1e-3, "Peak learning rate of the QAT fine-tuning.")
    flags.DEFINE_integer("qat_batch_size", 64, "QAT fine-tuning batch size.")
    flags.DEFINE_integer("verbose", 2, "Keras fit verbosity of the QAT fine-tuning.")
    flags.DEFINE_integer(
        "batch_size", 1, "Static batch of the files (0: dynamic, [-1, ...]).", lower_bound=0
    )
    flags.DEFINE_enum("io_type", "float32", IO_TYPES, "Input/output tensor type of the int8 files.")
    flags.DEFINE_string(
        "labels", None, "Text file of class names, one a line: adds TFLite metadata."
    )
    flags.DEFINE_float("mean", 0.0, "Metadata normalization: (pixel - mean) / std.")
    flags.DEFINE_float("std", 1.0, "Metadata normalization: (pixel - mean) / std.")
    flags.register_validator("qat_epochs", _qat_available, message="QAT is unavailable.")


def _qat_available(qat_epochs):
    """Flag validator: fails the command line at once where QAT cannot run."""
    if qat_epochs:
        try:
            example_export.check_qat_available()
        except RuntimeError as e:
            raise flags.ValidationError(
                f"{e} In this script: --quantization=int8 without --qat_epochs."
            ) from e
    return True


def main(argv):
    del argv
    run(example_flags.config_from_flags(ExportConfig, "export_tflite"))


if __name__ == "__main__":
    define_flags()
    app.run(main)

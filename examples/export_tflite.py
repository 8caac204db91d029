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

`--dataset` gives real images for verification (and int8 calibration, which
needs them) and the file's top-1 accuracy; without it, verification uses
random inputs. Writes `<output>` (default: next to the model,
`<name>_<quantization>.tflite`) and `<output without .tflite>.json`.

From Python: `run(ExportConfig(model_path=...))` returns the results dict.
"""

import dataclasses
import os
import sys
import tempfile

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import example_data  # noqa: E402
import example_flags  # noqa: E402
import example_reports  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402

__all__ = ["ExportConfig", "run"]

FLAGS = flags.FLAGS
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


@dataclasses.dataclass
class ExportConfig:
    """Everything a run of export_tflite depends on (the flags have the same names).

    Attributes:
        model_path: The `.keras` model.
        output: The .tflite path (default `<model dir>/<name>_<quantization>.tflite`).
        quantization: `"float32"`, `"float16"`, `"dynamic"` or `"int8"`.
        dataset, data_dir, test_limit, image_size, standardize: Images for
            verification, calibration and accuracy (None: random inputs;
            prepare them as for training).
        num_threads, runs, warmup: Latency measurement.
        compare: Also export and time the unfactorized (BN-folded) model,
            when the model has low-rank kernels to factorize.
    """

    model_path: str = None
    output: str = None
    quantization: str = "float32"
    dataset: str = None
    data_dir: str = None
    test_limit: int = None
    image_size: int = 224
    standardize: bool = True
    num_threads: int = 1
    runs: int = 50
    warmup: int = 10
    compare: bool = True

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

    def output_path(self):
        if self.output:
            return self.output
        stem = os.path.splitext(self.model_path)[0]
        return f"{stem}_{self.quantization}.tflite"


def _export(model, path, config, data):
    quantization = None if config.quantization == "float32" else config.quantization
    result = lrpet_tf.export_tflite(
        model,
        path,
        quantization=quantization,
        representative_dataset=data.sample(256) if quantization == "int8" else None,
        verify_data=data.sample(64) if data is not None else None,
    )
    latency = lrpet_tf.measure_latency(
        path, num_threads=config.num_threads, runs=config.runs, warmup=config.warmup
    )
    info = {
        "path": path,
        "bytes": result.size_bytes,
        "quantization": config.quantization,
        "max_error": result.max_error,
        "tolerance": result.tolerance,
        "top1_agreement": result.top1_agreement,
        "conv2d_ops": result.op_count("CONV_2D"),
        "fully_connected_ops": result.op_count("FULLY_CONNECTED"),
        "ops": len(result.ops),
        "latency_ms": dataclasses.asdict(latency),
        "macs": lrpet_tf.model_report(model).total_macs,
    }
    if data is not None:
        info["accuracy"] = example_training.tflite_accuracy(path, data)
    return info


def run(config=None, **changes):
    """Factorizes, folds, exports, verifies and times one model.

    Returns:
        A dict: `model_path`, `kind` ("svd", "low-rank" or "dense"),
        `factorized` (layer names), `tflite` (the file: path, bytes,
        max_error, op counts, MACs, `latency_ms` with median/mean/p90/min,
        accuracy with a dataset) and, with `compare`, `reference` (the same
        for the unfactorized model) and `speedup` (reference / compact median
        latency).
    """
    if config is None:
        config = ExportConfig(model_path=changes.pop("model_path", None))
    config = dataclasses.replace(config, **changes)
    model = example_training.load_model(config.model_path)
    has_svd = bool([layer for layer in model.layers if isinstance(layer, svd_training.SVDLayer)])
    compact, report = lrpet_tf.factorize(model, return_report=True)
    factorized = report.by_action("factorized")
    kind = "svd" if has_svd else ("low-rank" if factorized else "dense")
    data = None
    if config.dataset:
        data = example_data.load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            test_limit=config.test_limit,
            standardize=config.standardize,
            image_size=config.image_size,
        )
    path = config.output_path()
    results = {
        "model_path": config.model_path,
        "config": dataclasses.asdict(config),
        "kind": kind,
        "factorized": factorized,
        "tflite": _export(lrpet_tf.fold_batchnorm(compact), path, config, data),
    }
    if config.compare and kind == "low-rank":
        # The same model unfactorized (an SVD-form model has no dense form to compare).
        reference = lrpet_tf.fold_batchnorm(model)
        with tempfile.TemporaryDirectory() as tmp:
            results["reference"] = _export(
                reference, os.path.join(tmp, "reference.tflite"), config, data
            )
        results["reference"]["path"] = None
        results["speedup"] = (
            results["reference"]["latency_ms"]["median_ms"]
            / results["tflite"]["latency_ms"]["median_ms"]
        )
    example_reports.write_json(os.path.splitext(path)[0] + ".json", results)
    print(str(report))
    print()
    print(_table(results))
    return results


def _table(results):
    rows = []
    for label, key in (
        ("compact (factorized)", "tflite"),
        ("reference (unfactorized)", "reference"),
    ):
        info = results.get(key)
        if info is None:
            continue
        rows.append(
            [
                label,
                info["macs"],
                info["bytes"],
                info["conv2d_ops"],
                info["max_error"],
                info["latency_ms"]["median_ms"],
                None if info.get("accuracy") is None else 100 * info["accuracy"],
            ]
        )
    text = example_reports.format_table(
        ["model", "MACs", "bytes", "CONV_2D ops", "max |TFLite-Keras|", "median ms", "accuracy %"],
        rows,
        title=f"{results['tflite']['path']} ({results['kind']} model, "
        f"{results['tflite']['quantization']}, "
        f"{results['tflite']['latency_ms']['num_threads']} thread(s))",
    )
    if "speedup" in results:
        text += f"\nmeasured speedup {results['speedup']:.2f}x"
    return text


def define_flags():
    """The script's flags (defined only when run as a script)."""
    flags.DEFINE_string("model_path", None, "The .keras model to export.", required=True)
    flags.DEFINE_string("output", None, "The .tflite path (default: next to the model).")
    flags.DEFINE_enum("quantization", "float32", QUANTIZATIONS, "Quantization of the file.")
    flags.DEFINE_enum("dataset", None, example_data.DATASETS, "Images for verification.")
    flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files or ImageNet files.")
    flags.DEFINE_integer("test_limit", None, "Use at most this many test images.")
    flags.DEFINE_integer("image_size", 224, "ImageNet input size.")
    flags.DEFINE_bool("standardize", True, "Standardize images per channel (as in training).")
    flags.DEFINE_integer("num_threads", 1, "Interpreter threads for the latency measurement.")
    flags.DEFINE_integer("runs", 50, "Timed invokes (the median is reported).")
    flags.DEFINE_integer("warmup", 10, "Untimed invokes first.")
    flags.DEFINE_bool("compare", True, "Also time the unfactorized model.")


def main(argv):
    del argv
    run(example_flags.config_from_flags(ExportConfig, "export_tflite"))


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""Command-line flags of the example scripts, and configs built from them.

Scripts define their flags only when run as scripts (`define_*` in their
`__main__` block), so several scripts can be imported in one process (tests,
benchmarks) without absl's duplicate-flag errors. A flag has the name of the
config field it sets; `config_from_flags` starts from the config's defaults,
applies `--preset` (if any) and then every flag given on the command line, so
explicit flags win over the preset.
"""

import dataclasses

import example_data
import example_export
import example_models
import example_presets
import example_recipes
import example_training
from absl import flags

__all__ = [
    "config_from_flags",
    "define_data_flags",
    "define_lrpet_flags",
    "define_output_flags",
    "define_recipe_flags",
    "parse_ranks",
]

FLAGS = flags.FLAGS


def parse_ranks(text):
    """Parses `--ranks`: `"8"`, `"18,43*12"` (one per conv, in model order) or `"conv1=4,fc=8"`.

    Returns:
        None, an int, a list of ints or a dict layer name -> int.
    """
    if text is None or text == "" or isinstance(text, (int, list, dict)):
        return text or None
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if any("=" in item for item in items):
        return {name.strip(): int(rank) for name, rank in (item.split("=", 1) for item in items)}
    ranks = []
    for item in items:
        if "*" in item:
            rank, times = item.split("*", 1)
            ranks.extend([int(rank)] * int(times))
        else:
            ranks.append(int(item))
    return ranks[0] if len(ranks) == 1 else ranks


def _none_word(value):
    return None if value in (None, "", "none", "None") else value


def _frequency(value):
    return "epoch" if value in (None, "epoch") else int(value)


_CONVERTERS = {
    "ranks": parse_ranks,
    "exclude": lambda v: "auto" if list(v) == ["auto"] else tuple(v),
    "energy_transfer": _none_word,
    "sparsity": _none_word,
    "strategy": _none_word,
    "frequency": _frequency,
    "lr_steps": lambda v: tuple(float(x) for x in v) if v else None,
    "quantization": lambda v: tuple(v) if isinstance(v, list) else v,
    "macs_target": lambda v: v or None,
    "log_dir": _none_word,
}


def define_data_flags(default_model="small_cnn", default_dataset="digits", model_flags=True):
    """--model (unless `model_flags=False`), --dataset, how to read it, and --seed.

    The flags of `example_config.DataSettings` (plus --model and --width).
    """
    if model_flags:
        flags.DEFINE_enum("model", default_model, example_models.MODELS, "Reference model.")
        flags.DEFINE_integer("width", None, "Filters of the first stage (default: the paper's).")
    flags.DEFINE_enum("dataset", default_dataset, example_data.DATASETS, "Dataset.")
    flags.DEFINE_string(
        "data_dir", None, "Fashion-MNIST IDX files, or ImageNet TFRecords / image folders."
    )
    flags.DEFINE_integer("train_limit", None, "Use at most this many training images.")
    flags.DEFINE_integer("test_limit", None, "Use at most this many test images.")
    flags.DEFINE_integer("image_size", 224, "ImageNet input size.")
    flags.DEFINE_bool("standardize", True, "Standardize images per channel.")
    flags.DEFINE_integer("seed", 0, "Seed of the data sample and order, weights and augmentation.")


def define_recipe_flags(
    default_epochs=30, default_batch_size=64, default_recipe="paper", epochs_flag=True
):
    """--recipe and the fields of it one usually changes, --epochs, --batch_size.

    The flags of `example_config.RecipeSettings` (plus --epochs).
    """
    flags.DEFINE_enum("recipe", default_recipe, tuple(example_recipes.RECIPES), "Training recipe.")
    flags.DEFINE_float("learning_rate", None, "Initial learning rate (default: the recipe's).")
    flags.DEFINE_float("weight_decay", None, "Coupled L2 weight (default: the recipe's, 1e-4).")
    flags.DEFINE_enum(
        "schedule", None, example_recipes.SCHEDULES, "Learning-rate schedule (default: recipe's)."
    )
    flags.DEFINE_list("lr_steps", None, "Step schedule: fractions of the epochs, e.g. 0.5,0.75.")
    flags.DEFINE_enum(
        "augment", None, ("auto", "none", "crop", "crop_flip"), "Augmentation (default: recipe's)."
    )
    if epochs_flag:
        flags.DEFINE_integer("epochs", default_epochs, "Training epochs.")
    flags.DEFINE_integer("batch_size", default_batch_size, "Global batch size.")


def define_lrpet_flags(default_method="lrpet"):
    """--method, the rank choice and the LRPET callback's options (`LRPETSettings`)."""
    flags.DEFINE_enum(
        "method",
        default_method,
        ("lrpet", "dense", "scratch"),
        "lrpet, dense (baseline, same recipe) or scratch (train the factorized model directly).",
    )
    flags.DEFINE_float("prune_ratio", 0.6, "The paper's g: each layer keeps r = int(K - K*g).")
    flags.DEFINE_string(
        "ranks", None, 'Instead of prune_ratio: "8", "18,43*12" (per conv) or "conv1=4,..."'
    )
    flags.DEFINE_list(
        "exclude",
        ["auto"],
        'Conv layers LRPET leaves dense, e.g. stem; "auto": convs on <= 3 input channels '
        "(the stem, which a large g would leave at rank <= 2); empty: none.",
    )
    flags.DEFINE_string("frequency", "epoch", '"epoch" or a step count between projections.')
    flags.DEFINE_enum(
        "energy_transfer", "scale", ("scale", "additive", "none"), "Energy transfer mode."
    )
    flags.DEFINE_bool("bn_rectification", True, "Project the BN-merged kernels.")
    flags.DEFINE_integer("warmup_epochs", 0, "Full-rank epochs before the first projection.")
    flags.DEFINE_integer(
        "ramp_epochs", 0, "Epochs of the rank ramp (r_e falls from K to r; 0: the paper's none)."
    )


def define_output_flags():
    """The flags of `example_config.OutputSettings`: --output_dir, --log_dir, ..."""
    flags.DEFINE_string("output_dir", None, "Run folder (default: saved_models/<run name>).")
    # absl.logging already defines --log_dir (for log files, which it writes
    # only when asked to): the same flag names the TensorBoard folder here.
    if "log_dir" not in FLAGS:
        flags.DEFINE_string("log_dir", None, "TensorBoard log folder (off by default).")
    flags.DEFINE_list(
        "quantization",
        [],
        f"Extra .tflite files besides float32: any of {example_export.QUANTIZATIONS}.",
    )
    flags.DEFINE_enum("strategy", "default", example_training.STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_bool("plots", True, "Write PNG plots into the run folder.")
    flags.DEFINE_bool("validate", True, "Evaluate on the test set after every epoch.")
    flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (1 progress bar, 2 line per epoch).")


def config_from_flags(config_class, script=None):
    """Builds a config dataclass from its defaults, `--preset` and the given flags.

    Args:
        config_class: The script's config dataclass; each field with a flag
            of the same name is set from it when the flag is given.
        script: The script's name, to check the preset belongs to it.
    """
    values = {}
    preset = FLAGS["preset"].value if "preset" in FLAGS else None
    if preset:
        values.update(example_presets.get_preset(preset, script).settings)
    for field in dataclasses.fields(config_class):
        if field.name in FLAGS and FLAGS[field.name].present:
            value = FLAGS[field.name].value
            values[field.name] = _CONVERTERS.get(field.name, lambda v: v)(value)
    return config_class(**values)

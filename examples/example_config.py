"""The settings the example scripts share, as dataclasses their configs inherit.

Each group mirrors a group of flags in `example_flags` (a flag has the name of
the field it sets): the data (`DataSettings`, `define_data_flags`), the
training recipe (`RecipeSettings`, `define_recipe_flags`), the LRPET callback
(`LRPETSettings`, `define_lrpet_flags`) and the outputs (`OutputSettings`,
`define_output_flags`). A script's config (`train_lrpet.TrainConfig`,
`train_svd.SVDConfig`, `compress.CompressConfig`, `export_tflite.ExportConfig`)
inherits the groups it uses and adds its own fields; a field it redeclares
only changes the default.

Every field has a default, and configs are built by keyword, so the order in
which the groups are inherited does not matter to callers.
"""

import dataclasses

import example_data
import example_recipes

import lrpet_tf
from lrpet_tf import keras

__all__ = ["DataSettings", "LRPETSettings", "OutputSettings", "RecipeSettings"]


@dataclasses.dataclass
class DataSettings:
    """The dataset and how to read it.

    Attributes:
        dataset: A name in `example_data.DATASETS`.
        data_dir: Fashion-MNIST IDX files, or ImageNet TFRecords / image
            folders (None: the dataset's default location).
        train_limit, test_limit: Use at most this many images (None: all).
        image_size: Input size of ImageNet-size data.
        standardize: Standardize images per channel (training statistics).
        seed: Seed of the data sample and order (and of the weights and
            augmentation, where the config trains).
    """

    dataset: str = "digits"
    data_dir: str = None
    train_limit: int = None
    test_limit: int = None
    image_size: int = 224
    standardize: bool = True
    seed: int = 0

    def load_data(self):
        """The dataset (`example_data.load_dataset`)."""
        return example_data.load_dataset(
            self.dataset,
            data_dir=self.data_dir,
            seed=self.seed,
            train_limit=self.train_limit,
            test_limit=self.test_limit,
            standardize=self.standardize,
            image_size=self.image_size,
        )


@dataclasses.dataclass
class RecipeSettings:
    """The training recipe and the fields of it one usually changes.

    Attributes:
        recipe: A name in `example_recipes.RECIPES` or a `Recipe`.
        learning_rate, weight_decay, schedule, lr_steps: Overrides of the
            recipe's fields (None: the recipe's).
        augment: Override of the recipe's augmentation (`"none"`: none).
        batch_size: Global batch size.
    """

    recipe: object = "paper"
    learning_rate: float = None
    weight_decay: float = None
    schedule: str = None
    lr_steps: tuple = None
    augment: str = None
    batch_size: int = 64

    def make_recipe(self):
        """The `Recipe` with this config's overrides."""
        recipe = example_recipes.get_recipe(
            self.recipe,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            lr_steps=tuple(self.lr_steps) if self.lr_steps else None,
            augment=None if self.augment == "none" else self.augment,
        )
        if self.augment == "none":
            recipe = dataclasses.replace(recipe, augment=None)
        return recipe


@dataclasses.dataclass
class LRPETSettings:
    """The rank choice and the `lrpet_tf.LRPET` callback's options.

    Attributes:
        prune_ratio: The paper's g: r = int(K - K*g) for every conv.
        ranks: Instead (wins over `prune_ratio`): an int, a list (one per
            conv layer in model order) or a dict layer name -> rank.
        exclude: Names of conv layers LRPET leaves dense (not projected, not
            factorized), or `"auto"` (the default): every conv on at most 3
            input channels, i.e. the stem of an image model. Its matrix has
            only K = 9-27 rows, so a large g leaves it rank <= 2, which
            collapsed a small CNN from 77% to 29% at the last projection;
            dense, it costs a few hundred weights. The papers' presets set
            `()` (every conv projected, as published).
        frequency: `"epoch"` or a step count between projections.
        energy_transfer: `"scale"`, `"additive"` or None (plain truncation).
        bn_rectification: Project the BN-merged kernels.
        warmup_epochs: Epochs before the first projection.
        ramp_epochs: Epochs of LRPET's rank ramp (0: none, the paper).
    """

    prune_ratio: float = 0.6
    ranks: object = None
    exclude: object = "auto"
    frequency: object = "epoch"
    energy_transfer: str = "scale"
    bn_rectification: bool = True
    warmup_epochs: int = 0
    ramp_epochs: int = 0

    def excluded_layers(self, model):
        """The names `exclude` stands for in `model` (resolves `"auto"`)."""
        if self.exclude != "auto":
            return tuple(self.exclude)
        return tuple(
            layer.name
            for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and int(layer.kernel.shape[-2]) <= 3
        )

    def rank_argument(self, model):
        """The LRPET `ranks` argument: a list of ranks becomes a dict by conv order."""
        ranks = self.ranks
        if not isinstance(ranks, (list, tuple)):
            return ranks
        convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        if len(ranks) != len(convs):
            raise ValueError(
                f"Expected one rank per conv layer of {model.name!r} ({len(convs)}: {convs}). "
                f"Received {len(ranks)} ranks: {list(ranks)}"
            )
        return dict(zip(convs, (int(r) for r in ranks)))

    def make_lrpet(self, model, log_dir=None, verbose=1):
        """The `lrpet_tf.LRPET` callback of these settings for `model`."""
        ranks = self.rank_argument(model)
        return lrpet_tf.LRPET(
            prune_ratio=None if ranks is not None else self.prune_ratio,
            ranks=ranks,
            exclude=self.excluded_layers(model) or None,
            frequency=self.frequency,
            energy_transfer=self.energy_transfer,
            bn_rectification=self.bn_rectification,
            warmup_epochs=self.warmup_epochs,
            ramp_epochs=self.ramp_epochs,
            log_dir=log_dir,
            verbose=verbose,
        )


@dataclasses.dataclass
class OutputSettings:
    """What a training run writes and how it runs.

    Attributes:
        quantization: Extra .tflite quantizations besides float32.
        strategy: None, `"mirrored"` or `"multi_worker"`.
        output_dir: Run folder (default `saved_models/<run name>`).
        log_dir: TensorBoard folder; None: off.
        plots: Write the PNG plots into the run folder.
        validate: Evaluate on the test set after every epoch (`val_*` logs).
        verbose: Keras fit verbosity.
    """

    quantization: tuple = ()
    strategy: str = None
    output_dir: str = None
    log_dir: str = None
    plots: bool = True
    validate: bool = True
    verbose: int = 2

"""Training recipes: optimizer, learning-rate schedule, coupled L2 and augmentation.

A `Recipe` is what the papers call the training setting. The paper's
(Guo et al., arXiv 2204.05566, and the LRPET code): SGD with learning rate
0.1 and momentum 0.9, L2 weight decay 1e-4 on all parameters, the learning
rate times 0.1 at 50% and 75% of the epochs on CIFAR (200 and 300 of 400) and
at 25/50/75% on ImageNet (30/60/90 of 120), crop + flip augmentation.

Coupled L2, as PyTorch's `SGD(weight_decay=...)`: the gradient of
`0.5 * weight_decay * ||w||^2` is added to every trainable weight's gradient
before momentum. It is implemented as a term of the training loss over
`model.trainable_weights` (kernels, biases, BN gamma and beta, SVD factors:
everything the optimizer updates), not as Keras 3's decoupled
`weight_decay` argument of the optimizer and not as per-layer regularizers,
so it works the same for any model given (a loaded .keras file, a factorized
model) and in Keras 3 and tf_keras alike. The loss Keras reports therefore
includes the L2 term.
"""

import dataclasses
import math

import example_data
import tensorflow as tf

from lrpet_tf import keras

__all__ = ["RECIPES", "Recipe", "get_recipe"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "constant")


class CrossEntropyWithL2(keras.losses.Loss):
    """Sparse categorical cross-entropy on logits plus `0.5 * wd * sum ||w||^2`.

    Args:
        weights: The variables to decay (a model's `trainable_weights`).
        weight_decay: `wd`; 0 gives plain cross-entropy.
    """

    def __init__(self, weights, weight_decay, name="cross_entropy_l2"):
        super().__init__(name=name)
        self._decayed = list(weights) if weight_decay else []
        self.weight_decay = float(weight_decay)

    def call(self, y_true, y_pred):
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        if not self._decayed:
            return loss
        squares = tf.add_n(
            [tf.reduce_sum(tf.square(tf.cast(w, tf.float32))) for w in self._decayed]
        )
        return loss + tf.cast(0.5 * self.weight_decay * squares, loss.dtype)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """An optimizer, learning-rate schedule, coupled L2 and augmentation.

    Attributes:
        optimizer: `"sgd"` (the LRPET paper) or `"adam"` (the SVD-training
            code).
        learning_rate: Initial (peak) learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: Coupled L2 weight (see the module docstring).
        schedule: `"step"` (times `lr_decay` at each of `lr_steps`),
            `"cosine"` (to 0 at the end) or `"constant"`.
        lr_steps: For `"step"`: fractions of the epochs where the rate drops
            (0.5, 0.75 is 200/300 of 400 epochs).
        lr_decay: For `"step"`: the factor at each step.
        augment: `"auto"` (the dataset's usual: crop + flip for CIFAR-10,
            Fashion-MNIST and ImageNet, none for the others), None, `"crop"`
            or `"crop_flip"`.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"
    lr_steps: tuple = (0.5, 0.75)
    lr_decay: float = 0.1
    augment: str = "auto"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"Expected `optimizer` in {OPTIMIZERS}. Received: optimizer={self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"Expected `schedule` in {SCHEDULES}. Received: schedule={self.schedule!r}"
            )
        if any(not 0 < f < 1 for f in self.lr_steps):
            raise ValueError(
                f"Expected `lr_steps` to be fractions in (0, 1). Received: lr_steps={self.lr_steps}"
            )

    def replace(self, **changes):
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def augmentation(self, dataset_name):
        """The augmentation for a dataset (resolves `"auto"`)."""
        if self.augment == "auto":
            return example_data.DEFAULT_AUGMENTATION.get(dataset_name)
        return self.augment

    def learning_rate_schedule(self, steps_per_epoch, epochs):
        """The schedule as a Keras `LearningRateSchedule` of the optimizer step.

        A function of the optimizer's step count, so a resumed run
        (`BackupAndRestore` restores the optimizer) continues it exactly.
        """
        total = max(1, steps_per_epoch * epochs)
        if self.schedule == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, decay_steps=total)
        if self.schedule == "constant":
            return self.learning_rate
        # The optimizer passes the number of steps already taken: the first step
        # of epoch E sees E * steps_per_epoch, and Keras's boundaries are
        # inclusive, so the rate drops from that step on (PyTorch's MultiStepLR).
        boundaries, values = [], [self.learning_rate]
        for fraction in sorted(self.lr_steps):
            step = int(round(fraction * epochs)) * steps_per_epoch
            if 0 < step < total and (not boundaries or step - 1 > boundaries[-1]):
                boundaries.append(step - 1)
                values.append(values[-1] * self.lr_decay)
        if not boundaries:
            return self.learning_rate
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)

    def make_optimizer(self, steps_per_epoch, epochs):
        """SGD (with this recipe's momentum) or Adam on the learning-rate schedule."""
        schedule = self.learning_rate_schedule(steps_per_epoch, epochs)
        if self.optimizer == "adam":
            return keras.optimizers.Adam(schedule)
        return keras.optimizers.SGD(schedule, momentum=self.momentum, nesterov=self.nesterov)

    def describe(self):
        """The recipe in words, for reports (`"SGD momentum 0.9, lr 0.1, ..."`)."""
        if self.optimizer == "sgd":
            name = f"SGD {'Nesterov ' if self.nesterov else ''}momentum {self.momentum:g}"
        else:
            name = "Adam"
        if self.schedule == "cosine":
            schedule = "cosine decay to 0"
        elif self.schedule == "constant":
            schedule = "constant rate"
        else:
            steps = "/".join(f"{f:.0%}" for f in self.lr_steps)
            schedule = f"x{self.lr_decay:g} at {steps} of the epochs"
        return f"{name}, lr {self.learning_rate:g}, {schedule}, coupled L2 {self.weight_decay:g}"

    def compile(self, model, steps_per_epoch, epochs):
        """Compiles `model` for `epochs` epochs of `steps_per_epoch` steps.

        Call it inside the distribution strategy's scope. The loss is
        cross-entropy on logits plus the coupled L2 term over the model's
        trainable weights; the metric is accuracy.
        """
        model.compile(
            optimizer=self.make_optimizer(steps_per_epoch, epochs),
            loss=CrossEntropyWithL2(model.trainable_weights, self.weight_decay),
            metrics=["accuracy"],
        )
        return model


# The papers' settings, and two short ones for small data and fine-tuning.
RECIPES = {
    # LRPET on CIFAR: SGD 0.1, momentum 0.9, L2 1e-4, x0.1 at 200 and 300 of 400 epochs.
    "paper": Recipe(),
    # LRPET on ImageNet: the same, x0.1 at 30, 60 and 90 of 120 epochs.
    "paper_imagenet": Recipe(lr_steps=(0.25, 0.5, 0.75)),
    # The SVD-training code (yanghr/SVD_Prune_EDLCV, cifar10_resnet20.py): Adam
    # 1e-3 without weight decay, x0.1 at epochs 81 and 122 of 164.
    "svd_paper": Recipe(
        optimizer="adam", learning_rate=1e-3, weight_decay=0.0, lr_steps=(81 / 164, 122 / 164)
    ),
    "cosine": Recipe(learning_rate=0.05, schedule="cosine", nesterov=True),
    "finetune": Recipe(learning_rate=0.01, schedule="cosine"),
}


def get_recipe(recipe="paper", **changes):
    """A `Recipe` by name (one of `RECIPES`) or as given, with fields changed.

    Args:
        recipe: A name or a `Recipe`.
        **changes: Fields to change; None values are ignored (convenient for
            optional command-line flags).
    """
    if isinstance(recipe, Recipe):
        return recipe.replace(**changes)
    if recipe not in RECIPES:
        raise ValueError(
            f"Expected `recipe` to be one of {tuple(RECIPES)}. Received: recipe={recipe!r}"
        )
    return RECIPES[recipe].replace(**changes)


def steps_per_epoch(num_examples, batch_size):
    """Optimizer steps in one epoch (the last batch may be smaller)."""
    return max(1, math.ceil(num_examples / batch_size))

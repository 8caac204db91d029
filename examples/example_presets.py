"""The papers' settings as named presets: one command reproduces a table row.

    python examples/train_lrpet.py --preset=lrpet_resnet56_cifar10
    python examples/train_svd.py --preset=svd_resnet20_cifar10

A preset sets the fields of the script's config; flags given on the command
line override it (e.g. `--epochs=2` for a smoke run of a preset). `published`
is the paper's number for the row, to compare against.

Sources: LRPET, Guo et al., arXiv 2204.05566 (IEEE TNNLS 2024) and the README
of its official code (CIFAR-10: SGD 0.1, momentum 0.9, L2 1e-4, 400 epochs,
x0.1 at 200/300, batch 128, one projection per epoch; ImageNet: 120 epochs,
x0.1 at 30/60/90, batch 256, a projection every 250 steps). SVD training,
Yang et al., CVPR Workshops 2020 (arXiv 2004.09031), with the settings of its
released ResNet-20 start-up commands; its reference number is from an
independent reproduction.
"""

import dataclasses

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named setting of one script.

    Attributes:
        name: The preset's name (`--preset=<name>`).
        script: `"train_lrpet"` or `"train_svd"`.
        settings: Config field -> value.
        published: The paper's result for this setting, in words.
        flops_reduction: The published FLOPs reduction (fraction), if any.
        top1: The published top-1 accuracy (%), if any.
    """

    name: str
    script: str
    settings: dict
    published: str
    flops_reduction: float = None
    top1: float = None


_CIFAR = dict(dataset="cifar10", epochs=400, batch_size=128, recipe="paper", lr_steps=(0.5, 0.75))
_IMAGENET = dict(
    dataset="imagenet",
    epochs=120,
    batch_size=256,
    recipe="paper_imagenet",
    lr_steps=(0.25, 0.5, 0.75),
    frequency=250,
)


def _lrpet(name, model, base, top1, reduction, **settings):
    return Preset(
        name,
        "train_lrpet",
        dict(
            base,
            model=model,
            method="lrpet",
            energy_transfer="scale",
            bn_rectification=True,
            exclude=(),  # the papers project every conv, the first one included
        )
        | settings,
        f"{top1:.2f}% top-1 at {100 * reduction:.1f}% fewer FLOPs",
        reduction,
        top1,
    )


PRESETS = {
    p.name: p
    for p in (
        _lrpet("lrpet_resnet56_cifar10", "resnet56", _CIFAR, 93.27, 0.553, prune_ratio=0.57),
        _lrpet("lrpet_resnet110_cifar10", "resnet110", _CIFAR, 93.61, 0.629, prune_ratio=0.65),
        _lrpet(
            "lrpet_vgg16_cifar10",
            "vgg16",
            _CIFAR,
            93.52,
            0.740,
            prune_ratio=None,
            ranks=[18] + [43] * 12,
        ),
        _lrpet("lrpet_resnet18_imagenet", "resnet18", _IMAGENET, 67.87, 0.525, prune_ratio=0.58),
        _lrpet("lrpet_resnet34_imagenet", "resnet34", _IMAGENET, 72.95, 0.532, prune_ratio=0.58),
        _lrpet("lrpet_resnet50_imagenet", "resnet50", _IMAGENET, 74.25, 0.535, prune_ratio=0.62),
        Preset(
            "svd_resnet20_cifar10",
            "train_svd",
            dict(
                model="resnet20",
                dataset="cifar10",
                recipe="svd_paper",
                batch_size=100,
                decomposed_epochs=164,
                sparsity_epochs=164,
                finetune_epochs=164,
                scheme="channel",
                init="random",
                orthogonality=1.0,
                sparsity="hoyer",
                sparsity_weight=0.1,
                energy=3e-6,
            ),
            "91.17% top-1 at 2.18x fewer conv FLOPs (independent reproduction; 91.00% unpruned)",
            1 - 1 / 2.18,
            91.17,
        ),
    )
}


def get_preset(name, script=None):
    """The preset `name`, checked to belong to `script` when given."""
    if name not in PRESETS:
        raise ValueError(f"Expected `preset` to be one of {tuple(PRESETS)}. Received: {name!r}")
    preset = PRESETS[name]
    if script is not None and preset.script != script:
        raise ValueError(
            f"Preset {name!r} is for {preset.script}.py, not {script}.py. Presets of "
            f"{script}.py: {[p.name for p in PRESETS.values() if p.script == script]}"
        )
    return preset

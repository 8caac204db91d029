"""Choosing the layers a low-rank method applies to.

Shared by the LRPET callback and SVD decomposition, so "which layers" means
the same thing everywhere: layers of the chosen kinds (`"conv"`, `"dense"`,
see `layer_kinds`), anywhere in the model including nested models, narrowed by
`include` / `exclude` given as layer names or a predicate `layer -> bool`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Literal
from typing import TypeAlias

from lrpet_tf import _keras
from lrpet_tf._keras import keras
from lrpet_tf.graph.layer_kinds import LOW_RANK_KINDS
from lrpet_tf.graph.layer_kinds import low_rank_kind
from lrpet_tf.graph.layer_kinds import unsupported_reason
from lrpet_tf.ops.matrix_view import matrix_shape
from lrpet_tf.ops.rank_policy import RankPolicy
from lrpet_tf.ops.rank_policy import check_rank_in_range
from lrpet_tf.ops.rank_policy import checked_rank

__all__ = [
    "check_layer_names",
    "check_ranked_layers",
    "check_layer_types",
    "check_selector",
    "layers_by_name",
    "select_targets",
]

# The types of the `layer_types` and `include` / `exclude` arguments of every entry point.
LayerKind: TypeAlias = Literal["conv", "dense"]
LayerTypes: TypeAlias = LayerKind | Iterable[LayerKind]
LayerSelector: TypeAlias = str | Iterable[str] | Callable[[keras.layers.Layer], bool] | None


def layers_by_name(model):
    """Layer name -> layer for every layer of `model`, nested models included.

    The one way lrpet_tf walks a model's layers (`LRPET`, `factorize`,
    `allocate_ranks`, `decompose` and `prepare_qat` all go through it).
    """
    return {layer.name: layer for layer in _keras.flatten_layers(model)}


def check_layer_types(layer_types):
    """Validates `layer_types` and returns it as a tuple."""
    received = layer_types
    if isinstance(layer_types, str):
        layer_types = (layer_types,)
    try:
        layer_types = tuple(layer_types)
    except TypeError:  # None, a number, ...
        layer_types = ()
    if not layer_types or any(t not in LOW_RANK_KINDS for t in layer_types):
        raise ValueError(
            f"Expected `layer_types` to be a non-empty subset of {LOW_RANK_KINDS}. "
            f"Received: layer_types={received!r}"
        )
    return layer_types


def check_layer_names(names, by_name, argument, model_name):
    """Raises a ValueError listing the `names` that are not keys of `by_name`."""
    missing = [n for n in names if n not in by_name]
    if missing:
        shown = repr(missing[:8])[:-1] + (
            f", ... ({len(missing)} in all)]" if len(missing) > 8 else "]"
        )
        raise ValueError(
            f"`{argument}` names layers that model {model_name!r} does not have: {shown}. "
            f"Layer names are those of `model.layers` (nested models included)."
        )


def check_ranked_layers(model, ranks, argument="ranks"):
    """The layers of `model` that `ranks` names, checked before any work.

    The one check behind every entry point that takes ranks by layer name
    (`factorize`, `model_report`, `allocate_ranks`): each name is a layer of
    `model` (nested models included), one that can be factorized, and its
    rank an int in `[1, K]`.

    Args:
        model: The model the names refer to.
        ranks: Layer name -> rank, or a `RankPolicy` (its `layer_names()`,
            each rank asked through `checked_rank`).
        argument: The caller's argument name, for the messages.

    Returns:
        Layer name -> layer, in the order of the names.
    """
    is_policy = isinstance(ranks, RankPolicy)
    names = list(ranks.layer_names() if is_policy else ranks)
    by_name = layers_by_name(model)
    check_layer_names(names, by_name, argument, model.name)
    layers = {}
    for name in names:
        layer = by_name[name]
        reason = unsupported_reason(layer)
        if reason is not None:
            raise ValueError(
                f"`{argument}` names layer {name!r}, which cannot be factorized: {reason}."
            )
        shape = matrix_shape(layer.kernel.shape)
        if is_policy:
            checked_rank(ranks, name, shape)
        else:
            check_rank_in_range(ranks[name], min(shape), f"{argument}[{name!r}]")
        layers[name] = layer
    return layers


def check_selector(selector, argument):
    """Validates an `include`/`exclude` argument; returns names as a tuple."""
    if selector is None or callable(selector):
        return selector
    if isinstance(selector, str):
        return (selector,)
    try:
        names = tuple(selector)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"Expected `{argument}` to be None, a layer name, a list of layer "
            f"names or a callable `layer -> bool`. Received: {argument}={selector!r}"
        )
    return names


def _matches(selector, layer):
    if callable(selector):
        return bool(selector(layer))
    return layer.name in selector


def select_targets(model, layer_types=("conv",), include=None, exclude=None, trainable_only=True):
    """Returns the layers of `model` a low-rank method should touch.

    Args:
        model: Any built Keras model (subclassed models too).
        layer_types: Kinds to consider: `"conv"` and/or `"dense"`.
        include: None (all layers of those kinds), names, or a predicate.
            Names given here are taken even if their kind is not in
            `layer_types`, as long as they are low-rank targets.
        exclude: Names or a predicate; wins over `include`.
        trainable_only: Skip frozen (`trainable=False`) layers.

    Returns:
        `(targets, skipped)`: the chosen layers in model order (possibly not
        built yet, in a subclassed model before its first call), and a list
        of `(layer name, reason)` for layers of the chosen kinds left out.

    Raises:
        ValueError: A name in `include` / `exclude` that no layer has, or an
            included layer that is not a low-rank target.
    """
    layer_types = check_layer_types(layer_types)
    include = check_selector(include, "include")
    exclude = check_selector(exclude, "exclude")
    by_name = layers_by_name(model)
    layers = list(by_name.values())
    for argument, selector in (("include", include), ("exclude", exclude)):
        if selector is not None and not callable(selector):
            check_layer_names(selector, by_name, argument, model.name)
    if include is not None and not callable(include):
        bad = [(n, unsupported_reason(by_name[n])) for n in include]
        bad = [(n, why) for n, why in bad if why is not None]
        if bad:
            raise ValueError(
                "`include` names layers that have no low-rank form: "
                + "; ".join(f"{n!r}: {why}" for n, why in bad)
            )
    targets, skipped = [], []
    for layer in layers:
        kind = low_rank_kind(layer)
        if kind is None:
            continue
        if include is not None:
            chosen = _matches(include, layer)
            if callable(include):
                chosen = chosen and kind in layer_types
        else:
            chosen = kind in layer_types
        if not chosen:
            continue
        if exclude is not None and _matches(exclude, layer):
            continue
        if trainable_only and not layer.trainable:
            skipped.append((layer.name, "frozen (trainable=False)"))
            continue
        targets.append(layer)
    return targets, skipped

"""Every public function and class of lrpet_tf carries type hints.

The package ships `py.typed`, so its public surface is annotated: every
function and class named in the `__all__` of the seven public namespaces. For
a function, each parameter (other than `self`, `cls`, `*args`, `**kwargs`)
and the return; for a class, the same for its `__init__`, `__call__` and
public methods (those it defines or inherits from a private lrpet_tf base),
and the return of each property. The annotations must also resolve
(`typing.get_type_hints`), so a misspelt name in a string annotation fails
here rather than in a user's type checker.
"""

import ast
import functools
import importlib
import inspect
import typing

import pytest

NAMESPACES = (
    "lrpet_tf",
    "lrpet_tf.ops",
    "lrpet_tf.svd_training",
    "lrpet_tf.export",
    "lrpet_tf.graph",
    "lrpet_tf.callbacks",
    "lrpet_tf.layers",
)
EXEMPT: set = set()
PUBLIC_DUNDERS = ("__init__", "__call__")


def qualified_name(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def exported(namespace):
    """`{qualified name: object}` for each lrpet_tf function and class in a namespace's `__all__`.

    Submodules, constants, the Keras module and the version string are left out.
    """
    module = importlib.import_module(namespace)
    found = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(
            "lrpet_tf"
        ):
            found[qualified_name(obj)] = obj
    return found


def public_objects():
    return {name: obj for namespace in NAMESPACES for name, obj in exported(namespace).items()}


def members(label, attribute):
    """`(label, function, is_method)` for a class attribute that is a function or property."""
    if isinstance(attribute, property):
        if attribute.fget is not None:
            yield label, attribute.fget, True
    elif isinstance(attribute, staticmethod):
        yield label, attribute.__func__, False
    elif isinstance(attribute, classmethod):
        yield label, attribute.__func__, True
    elif inspect.isfunction(attribute):
        yield label, attribute, True


def class_callables(cls, public):
    """`(label, function, is_method)` for `__init__`, `__call__` and the public methods of `cls`.

    Those `cls` defines, or inherits from a private lrpet_tf base class (a
    public base is checked on its own; Keras's are not ours).
    """
    seen = set()
    for owner in cls.__mro__:
        if not owner.__module__.startswith("lrpet_tf"):
            continue
        if owner is not cls and qualified_name(owner) in public:
            seen.update(vars(owner))
            continue
        for name, attribute in vars(owner).items():
            if name in seen or (name.startswith("_") and name not in PUBLIC_DUNDERS):
                continue
            seen.add(name)
            yield from members(f"{qualified_name(cls)}.{name}", attribute)


def public_callables(objects, public):
    """`(label, function, is_method)` for the functions and class members of `objects`."""
    result = []
    for name, obj in sorted(objects.items()):
        if name in EXEMPT:
            continue
        if inspect.isfunction(obj):
            result.append((name, obj, False))
        else:
            result.extend(class_callables(obj, public))
    return result


def missing_annotations(label, function, is_method):
    """The parameters (and `return`) of `function` that have no annotation."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if is_method and parameters:
        parameters = parameters[1:]  # self / cls
    missing = [
        f"{label}({parameter.name})"
        for parameter in parameters
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and parameter.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append(f"{label} -> return")
    return missing


@functools.cache
def type_checking_names(module):
    """The names a module imports under `if TYPE_CHECKING:`, imported now.

    Annotations may name a class imported only for the type checker (where a
    runtime import would run against the layering, e.g. graph/ -> export/);
    they resolve against these, as a type checker resolves them.
    """
    names = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            exec(compile(ast.Module(node.body, []), module.__file__, "exec"), names)
    return names


def unresolved_annotations(label, function):
    """`[label: error]` if the annotations of `function` do not evaluate."""
    extra = type_checking_names(inspect.getmodule(function))
    try:
        typing.get_type_hints(function, localns={**extra, **function.__globals__})
    except Exception as e:  # noqa: BLE001 - reported with the name
        return [f"{label}: {type(e).__name__}: {e}"]
    return []


def test_the_walk_finds_the_public_surface():
    public = public_objects()
    assert "lrpet_tf.graph.factorize.factorize" in public
    assert "lrpet_tf.layers.svd_conv2d.SVDConv2D" in public
    labels = {label for label, _, _ in public_callables(public, public)}
    assert "lrpet_tf.callbacks.lrpet.LRPET.__init__" in labels
    assert "lrpet_tf.callbacks.lrpet.LRPET.ranks" in labels  # a property
    assert "lrpet_tf.callbacks.projector.Projector.__call__" in labels
    # Inherited from the private base `_WeightedRegularizer`.
    assert "lrpet_tf.layers.svd_regularizers.OrthogonalityRegularizer.set_weight" in labels
    # Checked on SVDLayer itself, not again on each subclass.
    assert "lrpet_tf.layers.svd_dense.SVDDense.factors" not in labels
    assert "lrpet_tf.export.latency.measure_latency" in labels
    assert len(labels) > 150


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_callable_is_annotated(namespace):
    callables = public_callables(exported(namespace), public_objects())
    missing = [hit for callable_ in callables for hit in missing_annotations(*callable_)]
    assert not missing, f"{len(missing)} missing annotations in {namespace}:\n" + "\n".join(missing)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_annotation_resolves(namespace):
    callables = public_callables(exported(namespace), public_objects())
    errors = [
        hit for label, function, _ in callables for hit in unresolved_annotations(label, function)
    ]
    assert not errors, "\n".join(errors)


def test_the_checks_catch_a_missing_or_misspelt_annotation():
    def annotated(x: int, *args, y: str = "", **kwargs) -> None:
        del x, args, y, kwargs

    def bare(x, y: int = 0):
        del x, y

    def misspelt(x: "Sequense[int]") -> None:  # noqa: F821
        del x

    assert missing_annotations("annotated", annotated, False) == []
    assert missing_annotations("bare", bare, False) == ["bare(x)", "bare -> return"]
    assert unresolved_annotations("annotated", annotated) == []
    assert unresolved_annotations("misspelt", misspelt) == [
        "misspelt: NameError: name 'Sequense' is not defined"
    ]

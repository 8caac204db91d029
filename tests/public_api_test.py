"""The package's boundaries, checked on the source: private stays private.

* Keras (and TensorFlow) private attributes are touched only in
  `lrpet_tf/_keras.py`.
* Examples and benchmarks use lrpet_tf's public API only.
* No example script uses another one's private helpers, and the library's
  tests import no example code.
"""

import ast
import os
import pathlib

import pytest

pytestmark = pytest.mark.keras_independent  # reads source files (conftest.py)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {
    "lrpet_tf",
    "lrpet_tf.callbacks",
    "lrpet_tf.export",
    "lrpet_tf.graph",
    "lrpet_tf.layers",
    "lrpet_tf.ops",
    "lrpet_tf.svd_training",
}
EXAMPLE_TESTS = {
    "example_scripts_test.py",
    "examples_output_test.py",
    "examples_test.py",
    "qat_example_test.py",
    "quickstart_test.py",
}


def python_files(folder):
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "third_party" not in p.parts)


def private_attributes(path, root=ROOT):
    """`x._name` where `x` is not `self`, `cls` or `super()`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
            continue
        found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def imports(path):
    """`(module, name)` for every import (name None for `import module`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_keras_private_attributes_only_in_the_adapter():
    files = [p for p in python_files("lrpet_tf") if p.name != "_keras.py"]
    assert len(files) > 30
    found = [hit for p in files for hit in private_attributes(p)]
    assert not found, "private attributes outside lrpet_tf/_keras.py:\n" + "\n".join(found)


def test_the_scan_catches_a_private_attribute(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f(t):\n    return t._keras_history[0] + self._fine + super()._fine\n")
    assert private_attributes(path, tmp_path) == ["probe.py:2: t._keras_history"]


@pytest.mark.parametrize("folder", ["examples", "benchmarks"])
def test_examples_and_benchmarks_use_only_the_public_api(folder):
    bad = []
    for path in python_files(folder):
        for module, name in imports(path):
            if not module.startswith("lrpet_tf"):
                continue
            target = f"{module}.{name}" if name else module
            if module not in PUBLIC_MODULES or (name and name.startswith("_")):
                bad.append(f"{path.relative_to(ROOT)}: {target}")
        bad += private_attributes(path)  # of lrpet_tf objects, Keras ones or another module's
    assert not bad, "private names used:\n" + "\n".join(bad)


def test_no_example_uses_another_ones_private_helpers():
    scripts = {p.stem for p in python_files("examples")}
    bad = []
    for path in python_files("examples"):
        for module, name in imports(path):
            if module in scripts and name and name.startswith("_"):
                bad.append(f"{path.relative_to(ROOT)}: from {module} import {name}")
        for hit in private_attributes(path):
            owner = hit.split(": ", 1)[1].split(".")[0]
            if owner in scripts:
                bad.append(hit)
    assert not bad, "\n".join(bad)


def test_library_tests_import_no_example_code():
    examples = {p.stem for p in python_files("examples")}
    bad = []
    for path in python_files("tests"):
        if path.name in EXAMPLE_TESTS:
            continue
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("sys.path.insert") and "examples" in line:
                bad.append(f"{path.relative_to(ROOT)} puts examples/ on the path: {line.strip()}")
        bad += [
            f"{path.relative_to(ROOT)}: {module}"
            for module, _ in imports(path)
            if module.split(".")[0] in examples
        ]
    assert not bad, "\n".join(bad)
    assert os.path.isdir(ROOT / "examples")

"""The Bazel BUILD files stay in sync with the Python source tree.

Every module under lrpet_tf/ and every helper in tests/ and examples/ must be
in the `srcs` of some py_library, and every tests/*_test.py in the `srcs` of a
py_test (or of the pytest_test macro from third_party/bazel/pytest.bzl).
BUILD files are Starlark, which Python's `ast` parses; `srcs` may be a list of
file names, a glob(), or a sum of those, and globs are evaluated here against
the tree the way Bazel does (`*` within one path segment, `**` across any
number of folders, never into a subpackage that has its own BUILD file).

Runs under pytest (on the source tree) and under Bazel as //:build_sync_test
(on the runfiles tree, which holds BUILD and, through the test's data globs,
every file the check covers).
"""

import ast
import os
import re

import pytest

pytestmark = pytest.mark.keras_independent  # reads BUILD and sources (conftest.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_FILE_NAMES = ("BUILD", "BUILD.bazel")
LIBRARY_RULES = ("py_library",)
TEST_RULES = ("py_test", "pytest_test")


class UnsupportedExpression(ValueError):
    """A BUILD expression this test cannot evaluate without running Starlark."""


def glob_regex(pattern):
    """Returns a regex matching the package-relative paths of a Bazel glob pattern."""
    segments = pattern.split("/")
    parts = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append("(?:[^/]+/)*[^/]+" if last else "(?:[^/]+/)*")
        else:
            parts.append(re.escape(segment).replace(r"\*", "[^/]*") + ("" if last else "/"))
    return re.compile("".join(parts) + r"\Z")


def is_package(folder):
    return any(os.path.isfile(os.path.join(folder, name)) for name in BUILD_FILE_NAMES)


def package_files(root, package, pattern):
    """Yields package-relative paths of files a glob pattern could match.

    Walks only below the pattern's fixed leading folders and, like Bazel, does
    not descend into subpackages (folders with a BUILD file).
    """
    fixed = []
    for segment in pattern.split("/")[:-1]:
        if "*" in segment:
            break
        fixed.append(segment)
    package_dir = os.path.join(root, package)
    for depth in range(1, len(fixed) + 1):
        if is_package(os.path.join(package_dir, *fixed[:depth])):
            return
    start = os.path.join(package_dir, *fixed)
    for folder, subfolders, files in os.walk(start):
        subfolders[:] = [
            name
            for name in subfolders
            if name != "__pycache__" and not is_package(os.path.join(folder, name))
        ]
        for name in files:
            yield os.path.relpath(os.path.join(folder, name), package_dir).replace(os.sep, "/")


def evaluate_glob(root, package, call):
    """Returns the package-relative files matched by a `glob(include, exclude=...)` call."""
    arguments = {keyword.arg: keyword.value for keyword in call.keywords}
    if call.args:
        arguments["include"] = call.args[0]
    include = evaluate_strings(arguments.get("include"))
    exclude = [glob_regex(p) for p in evaluate_strings(arguments.get("exclude"))]
    matched = set()
    for pattern in include:
        regex = glob_regex(pattern)
        for path in package_files(root, package, pattern):
            if regex.match(path) and not any(e.match(path) for e in exclude):
                matched.add(path)
    return sorted(matched)


def evaluate_strings(node):
    """Evaluates a list of string literals (None, an absent argument, is empty)."""
    if node is None:
        return []
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]
    raise UnsupportedExpression(ast.unparse(node))


def label_to_path(package, label):
    """Returns the repository-relative path of a source file label."""
    if label.startswith("//"):
        label_package, _, name = label[2:].partition(":")
        return "/".join(p for p in (label_package, name) if p)
    if label.startswith("@"):
        raise UnsupportedExpression(label)
    return "/".join(p for p in (package, label.lstrip(":")) if p)


def evaluate_srcs(root, package, node):
    """Returns (files, listed): all repository-relative srcs, and those named explicitly."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left_files, left_listed = evaluate_srcs(root, package, node.left)
        right_files, right_listed = evaluate_srcs(root, package, node.right)
        return left_files + right_files, left_listed + right_listed
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "glob":
        files = ["/".join(p for p in (package, f) if p) for f in evaluate_glob(root, package, node)]
        return files, []
    listed = [label_to_path(package, label) for label in evaluate_strings(node)]
    return listed, listed


def build_files(root):
    """Yields (package, path) of every BUILD file, skipping hidden and Bazel output folders."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith((".", "bazel-")) and name != "__pycache__"
        )
        for name in BUILD_FILE_NAMES:
            if name in files:
                package = os.path.relpath(folder, root).replace(os.sep, "/")
                yield ("" if package == "." else package), os.path.join(folder, name)


def read_targets(root):
    """Returns one dict per py_* rule call: rule, package, name, where, srcs, listed srcs."""
    targets = []
    for package, path in build_files(root):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            rule = node.func.id
            if rule not in LIBRARY_RULES + TEST_RULES:
                continue
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            name = keywords.get("name")
            name = name.value if isinstance(name, ast.Constant) else ast.unparse(name)
            where = f"{os.path.relpath(path, root)}:{node.lineno} {rule}(name = {name!r})"
            try:
                srcs, listed = evaluate_srcs(root, package, keywords.get("srcs", ast.List([])))
            except UnsupportedExpression as e:
                raise AssertionError(
                    f"{where}: cannot evaluate `{e}` in srcs. Write srcs as a list of file "
                    "names, a glob([...], exclude = [...]) or a sum of those, so "
                    "tests/build_sync_test.py can check it."
                ) from None
            deps = evaluate_strings(keywords.get("deps")) if "deps" in keywords else []
            targets.append(
                {
                    "rule": rule,
                    "package": package,
                    "name": name,
                    "where": where,
                    "srcs": set(srcs),
                    "listed": listed,
                    "deps": [d for d in deps if d.startswith(":")],
                }
            )
    return targets


def python_files(root, folder, pattern="**/*.py"):
    """Repository-relative paths of the .py files under `folder` matching a glob pattern."""
    regex = glob_regex(pattern)
    found = []
    for dirpath, subfolders, files in os.walk(os.path.join(root, folder)):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in files:
            path = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if regex.match(path[len(folder) + 1 :]):
                found.append(path)
    return sorted(found)


def sources_of(targets, rules):
    return set().union(*(t["srcs"] for t in targets if t["rule"] in rules))


@pytest.fixture(scope="module")
def targets():
    return read_targets(ROOT)


def test_every_package_module_is_in_a_py_library(targets):
    missing = sorted(set(python_files(ROOT, "lrpet_tf")) - sources_of(targets, LIBRARY_RULES))
    assert not missing, (
        f"Not in any py_library of a BUILD file: {missing}. A module in an existing "
        "subpackage is picked up by that subpackage's glob; a new subpackage needs its own "
        "py_library in BUILD (srcs = glob([...]), its deps, and a dep from :lrpet_tf)."
    )


def test_every_test_file_has_a_py_test(targets):
    test_files = python_files(ROOT, "tests", "*_test.py")
    missing = sorted(set(test_files) - sources_of(targets, TEST_RULES))
    assert not missing, (
        f"No py_test for {missing}. Add to BUILD, for each file, e.g. pytest_test(name = "
        '"x_test", size = "small" | "medium" | "large", srcs = ["tests/x_test.py"], '
        'deps = [":lrpet_tf", ":test_support"]) and tags = ["slow"] if it takes minutes.'
    )


def test_test_helpers_and_examples_are_in_a_py_library(targets):
    helpers = [p for p in python_files(ROOT, "tests", "*.py") if not p.endswith("_test.py")]
    wanted = set(helpers) | set(python_files(ROOT, "examples"))
    missing = sorted(wanted - sources_of(targets, LIBRARY_RULES))
    assert not missing, f"Not in any py_library of a BUILD file: {missing}."


def test_listed_sources_exist(targets):
    missing = [
        f"{t['where']}: {path}"
        for t in targets
        for path in t["listed"]
        if not os.path.isfile(os.path.join(ROOT, path))
    ]
    assert not missing, f"srcs name files that do not exist: {missing}"


def test_target_names_are_unique(targets):
    seen = {}
    duplicates = []
    for t in targets:
        key = (t["package"], t["name"])
        if key in seen:
            duplicates.append(f"{t['where']} repeats {seen[key]}")
        seen.setdefault(key, t["where"])
    assert not duplicates, f"Bazel rejects a package with two targets of one name: {duplicates}"


def test_glob_follows_bazel_semantics(tmp_path):
    for path in ("pkg/a.py", "pkg/a_test.py", "pkg/sub/b.py", "pkg/sub/deep/c.py", "pkg/own/d.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text('"""A module."""\n')
    (tmp_path / "pkg" / "BUILD").write_text("")
    (tmp_path / "pkg" / "own" / "BUILD").write_text("")

    def glob(source):
        return evaluate_glob(str(tmp_path), "pkg", ast.parse(source, mode="eval").body)

    assert glob('glob(["*.py"])') == ["a.py", "a_test.py"]
    assert glob('glob(["*.py"], exclude = ["*_test.py"])') == ["a.py"]
    assert glob('glob(include = ["**/*.py"])') == ["a.py", "a_test.py", "sub/b.py", "sub/deep/c.py"]
    assert glob('glob(["sub/**/*.py"])') == ["sub/b.py", "sub/deep/c.py"]
    assert glob('glob(["sub/**"])') == ["sub/b.py", "sub/deep/c.py"]
    assert glob('glob(["own/*.py", "**/d.py"])') == []  # own/ is a subpackage


def test_targets_are_read_from_literal_lists_globs_and_sums(tmp_path):
    (tmp_path / "lib").mkdir()
    for name in ("a.py", "b.py", "c_test.py"):
        (tmp_path / "lib" / name).write_text('"""A module."""\n')
    (tmp_path / "BUILD").write_text(
        'load("//x:y.bzl", "pytest_test")\n'
        'py_library(name = "lib", srcs = ["lib/a.py"] + glob(["lib/b*.py"]))\n'
        'pytest_test(name = "c_test", srcs = ["lib/c_test.py"], deps = [":lib"])\n'
        "[py_library(name = n, srcs = [n]) for n in NAMES]\n"
    )
    with pytest.raises(
        AssertionError, match=r"BUILD:4 py_library\(name = 'n'\): cannot evaluate `\[n\]`"
    ):
        read_targets(str(tmp_path))
    text = (tmp_path / "BUILD").read_text().splitlines()
    (tmp_path / "BUILD").write_text("\n".join(text[:3]) + "\n")
    targets = read_targets(str(tmp_path))
    assert [(t["rule"], sorted(t["srcs"])) for t in targets] == [
        ("py_library", ["lib/a.py", "lib/b.py"]),
        ("pytest_test", ["lib/c_test.py"]),
    ]


# Folders whose modules are imported by their bare name (tests, examples and
# benchmarks put their own folder on sys.path), and the package.
SCRIPT_FOLDERS = ("tests", "examples", "benchmarks")


def module_file(root, module):
    """The repository file an import of `module` loads, or None for third-party code."""
    parts = module.split(".")
    if parts[0] == "lrpet_tf":
        base = os.path.join(*parts)
        for path in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(os.path.join(root, path)):
                return path.replace(os.sep, "/")
        return None
    if parts[0] in SCRIPT_FOLDERS and len(parts) > 1:  # from benchmarks import bench_utils
        parts = parts[1:]
    for folder in SCRIPT_FOLDERS:
        path = f"{folder}/{parts[0]}.py"
        if os.path.isfile(os.path.join(root, path)):
            return path
    return None


def _runtime_nodes(tree):
    """The nodes of `tree` outside `if TYPE_CHECKING:` blocks (those imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None)
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if isinstance(child, ast.If) and name == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


def imported_files(root, path):
    """Repository files the Python file at `path` imports (anywhere in it)."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in _runtime_nodes(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from m import n`: the module n if it is one, else the names of m.
            for alias in node.names:
                names.append(
                    f"{node.module}.{alias.name}"
                    if module_file(root, f"{node.module}.{alias.name}")
                    else node.module
                )
        for name in names:
            target = module_file(root, name)
            if target is not None:
                found.add(target)
    return found


def transitive_srcs(targets, target):
    by_name = {(t["package"], t["name"]): t for t in targets}
    seen, todo, srcs = set(), [target], set()
    while todo:
        current = todo.pop()
        key = (current["package"], current["name"])
        if key in seen:
            continue
        seen.add(key)
        srcs |= current["srcs"]
        todo += [by_name[(current["package"], d[1:])] for d in current["deps"]]
    return srcs


def test_every_target_depends_on_what_its_files_import(targets):
    """A file importing a module its target's deps do not provide fails only under Bazel."""
    problems = []
    for target in targets:
        provided = transitive_srcs(targets, target)
        for path in sorted(p for p in target["srcs"] if p.endswith(".py")):
            missing = sorted(imported_files(ROOT, path) - provided)
            if missing:
                problems.append(f"{target['where']}: {path} imports {missing}")
    assert not problems, "Add the targets that provide these to `deps`:\n" + "\n".join(problems)


def test_the_import_check_catches_a_missing_dep(tmp_path):
    (tmp_path / "lrpet_tf").mkdir()
    (tmp_path / "lrpet_tf" / "__init__.py").write_text("")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "helper.py").write_text("import lrpet_tf\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "x_test.py").write_text(
        "import helper\nimport numpy\nif TYPE_CHECKING:\n    import other_helper\n"
    )
    (tmp_path / "examples" / "other_helper.py").write_text("")
    assert imported_files(str(tmp_path), "tests/x_test.py") == {"examples/helper.py"}
    assert imported_files(str(tmp_path), "examples/helper.py") == {"lrpet_tf/__init__.py"}

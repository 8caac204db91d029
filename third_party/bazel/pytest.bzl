"""pytest_test: a py_test that runs one pytest file.

The suite is written for pytest (fixtures, parametrize, conftest.py), so a
plain py_test running the file as a script would collect nothing. Each
pytest_test instead runs //third_party/bazel:pytest_main.py with the test
file as its argument, from the test's runfiles tree; pytest reads
pyproject.toml there (markers, warning filters) and the conftest.py next to
the test file.

Example:

    pytest_test(
        name = "ops_test",
        size = "small",
        srcs = ["tests/ops_test.py"],
        deps = [":lrpet_tf"],
    )
"""

_MAIN = "//third_party/bazel:pytest_main.py"

def pytest_test(name, srcs, deps = [], data = [], args = [], **kwargs):
    """Declares a py_test that runs the pytest file(s) in `srcs`.

    Args:
      name: the target name, by convention the test file's name without ".py".
      srcs: the pytest file(s) to run, all in the calling package.
      deps: py_library targets the tests import (conftest.py included).
      data: files the tests read at run time; pyproject.toml is always added.
      args: extra pytest arguments, placed after the test files.
      **kwargs: passed to py_test (size, tags, timeout, ...).
    """
    native.py_test(
        name = name,
        srcs = srcs + [_MAIN],
        main = _MAIN,
        args = ["$(rootpath %s)" % src for src in srcs] + args,
        data = data + ["//:pyproject.toml"],
        deps = deps,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

"""Runs pytest files as a Bazel test: the `main` of every pytest_test target.

Bazel starts this script in the test's runfiles tree with the test files as
arguments (see pytest.bzl). It adds what Bazel's test protocol asks of a test
runner: a JUnit XML report in $XML_OUTPUT_FILE, `bazel test --test_filter=...`
passed on as pytest's `-k`, and no .pytest_cache (the runfiles tree is
Bazel's, not ours). The exit status is pytest's.
"""

import os
import sys

import pytest


def pytest_args(argv, environ):
    """Returns pytest's command line for a Bazel test run.

    Args:
      argv: the arguments Bazel passed (test files, then any extra args).
      environ: the test environment (Bazel's test protocol variables).

    Returns:
      A list of pytest arguments.
    """
    args = ["-p", "no:cacheprovider", *argv]
    xml_output = environ.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append(f"--junitxml={xml_output}")
    test_filter = environ.get("TESTBRIDGE_TEST_ONLY")
    if test_filter:
        args += ["-k", test_filter]
    return args


def main():
    sys.exit(pytest.main(pytest_args(sys.argv[1:], os.environ)))


if __name__ == "__main__":
    main()

"""The README's quick-start table is what the quick start prints today.

The quick start trains two small CNNs on the digits (about a minute) and is
deterministic on a given CPU. The parameters, MACs and file sizes depend only
on the architecture and the ranks and are compared exactly; the accuracies
may differ on another CPU's vector width by round-off that flips a test image
or two, so they are compared to within 2 of the 360 test images; the max
error and the wall time are not compared.
"""

import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import quickstart  # noqa: E402

from lrpet_tf import keras  # noqa: E402

# The README's command runs the quick start in Keras 3 mode; tf_keras names
# the file's tensors differently, so its .tflite sizes differ by a few bytes.
pytestmark = pytest.mark.skipif(
    not keras.__version__.startswith("3."), reason="the README's table is the Keras 3 run"
)


def readme_table():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("<!-- quickstart-table -->\n", 1)[1].split("<!-- /quickstart-table -->")[0]
    return [line[4:] for line in block.splitlines()]


def rows(lines):
    """Label -> the row's cells, for the two model rows."""
    found = {}
    for line in lines:
        for label in ("dense", "LRPET compact"):
            if line.startswith(label + " "):
                found[label] = line[len(label) :].split()
    return found


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("quickstart"))
    results = quickstart.run(output_dir=output, verbose=0)
    data = quickstart.example_data.load_dataset("digits", seed=0)
    return quickstart.results_table(results, data).splitlines(), results


def test_readme_table_matches_the_quick_start(printed):
    lines, results = printed
    readme = readme_table()
    assert lines[0] == readme[0]  # data and prune ratio
    assert lines[1] == readme[1]  # headers
    got, want = rows(lines), rows(readme)
    assert set(got) == set(want) == {"dense", "LRPET compact"}
    for label in got:
        accuracy, params, conv_macs, macs, size, error = got[label]
        w_accuracy, w_params, w_conv_macs, w_macs, w_size, w_error = want[label]
        assert (params, conv_macs, macs, size) == (w_params, w_conv_macs, w_macs, w_size), label
        assert abs(float(accuracy) - float(w_accuracy)) <= 100 * 2 / 360 + 1e-9, label
        assert float(error) < 1e-4 and float(w_error) < 1e-4
    strip = lambda line: re.sub(r"\([0-9]+ s\)$", "", re.sub(r"[+-][0-9.]+ points", "", line))  # noqa: E731
    assert strip(lines[-1]) == strip(readme[-1])
    assert all(m["tflite_metadata"] for m in results["models"].values())

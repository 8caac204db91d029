"""lrpet_tf._keras is the only module that chooses and imports Keras."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lrpet_tf")


def test_no_module_but_the_adapter_imports_keras():
    pattern = re.compile(r"^\s*(import|from)\s+(keras|tf_keras)\b|\btf\.keras", re.M)
    offenders = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != os.path.join(PACKAGE, "_keras.py"):
                with open(path) as f:
                    if pattern.search(f.read()):
                        offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []


def test_other_keras_backend_gets_a_clear_error():
    env = dict(os.environ, KERAS_BACKEND="numpy", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import lrpet_tf"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "KERAS_BACKEND='numpy'" in proc.stderr
    assert "KERAS_BACKEND=tensorflow" in proc.stderr

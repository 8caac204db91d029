"""Packaging of lrpet_tf (pip install -e ".[test]")."""

import os

from setuptools import find_packages
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
version = {}
with open(os.path.join(HERE, "lrpet_tf", "version.py")) as f:
    exec(f.read(), version)

with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="lrpet_tf",
    version=version["__version__"],
    description=(
        "Low-rank training (LRPET, SVD training) and compression for Keras, "
        "exported to TFLite with the factorized layers kept."
    ),
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["lrpet_tf", "lrpet_tf.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Keras 3 needs TF >= 2.16; tested with 2.21 (see constraints.txt).
        "tensorflow>=2.16",
        "keras>=3.0",
        "numpy>=1.26",
        "absl-py>=1.0",
        "ai-edge-litert>=1.0",
    ],
    extras_require={
        "examples": ["scikit-learn>=1.3", "matplotlib>=3.7", "tensorboard>=2.16"],
        "test": [
            "pytest>=7.4",
            "pytest-xdist>=3.3",
            "hypothesis>=6.80",
            "scikit-learn>=1.3",
            "matplotlib>=3.7",
            "tensorboard>=2.16",
            "ruff>=0.5",
        ],
        "legacy": ["tf_keras>=2.16", "tensorflow-model-optimization>=0.8"],
        # TensorBoard summaries of LRPET(log_dir=...).
        "tensorboard": ["tensorboard>=2.16"],
    },
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)

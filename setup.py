"""A shim for tools that still call setup.py; the metadata is in pyproject.toml (PEP 621)."""

from setuptools import setup

setup()

"""The version of lrpet_tf."""

__version__ = "0.1.0"

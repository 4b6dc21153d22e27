"""The lockship installer: the code frozen into every installer file."""

__version__ = "0.1.0"

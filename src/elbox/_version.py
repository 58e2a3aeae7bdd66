"""The package's version, recorded in every run."""

__version__ = "0.1.0"

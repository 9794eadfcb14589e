"""The package's version, in a leaf every module may import."""

__version__ = "0.4.0"

"""Single source of the package version (also stored in every checkpoint)."""

__version__ = "0.1.0"

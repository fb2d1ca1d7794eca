"""The package version, in one place (imported by `keel` and by what reports it)."""

__version__ = "0.1.0"

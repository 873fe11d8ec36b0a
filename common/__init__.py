"""Shared library of the mint-tools: config, logging, retry, exit codes, files, locks."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("mint-tools")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

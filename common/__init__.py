"""Shared library of the mint-tools: config, logging, retry, exit codes, files, locks."""


def __getattr__(name: str) -> str:
    # The version is looked up only when asked for: importlib.metadata costs ~30 ms at every
    # tool start, which module scripts calling a tool in a loop would pay for nothing.
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("mint-tools")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0"
    raise AttributeError(f"module 'mint_common' has no attribute {name!r}")

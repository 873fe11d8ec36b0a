"""The distribution installs `mint_common` (never a package called `common`) with the base deps."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_base_install_provides_mint_common_and_no_common(base_only_venv: Path) -> None:
    probe = (
        "import importlib.util, mint_common, mint_common.config, mint_common.files;"
        "print(mint_common.__version__);"
        "print(importlib.util.find_spec('common'));"
        "print(importlib.util.find_spec('paramiko'), importlib.util.find_spec('boto3'))"
    )
    result = subprocess.run(
        [str(base_only_venv), "-c", probe], capture_output=True, text=True, cwd="/", check=True
    )
    version, common_spec, extras = result.stdout.splitlines()
    assert version != "0.0.0"
    assert common_spec == "None"
    assert extras == "None None"
    site = subprocess.run(
        [str(base_only_venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (Path(site) / "mint_common" / "py.typed").exists()
    assert not (Path(site) / "common").exists()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["exec ./scripts/test"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "./scripts/test" in readme and "./scripts/demo" in readme


def test_version_is_looked_up_lazily_and_unknown_attributes_fail() -> None:
    import mint_common

    assert mint_common.__version__.count(".") >= 2
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = mint_common.nope  # type: ignore[attr-defined]

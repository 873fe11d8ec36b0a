"""Build one tool as a single-file executable (a pex) into dist/.

Run through ./scripts/bundle TOOL (it sets up .venv, which holds pex). The file
carries the tool's third-party dependencies as wheels for CPython 3.9-3.13 on
Linux x86_64 and aarch64 (manylinux2014, glibc 2.17 or newer) and needs only
`python3` on the target. Downloads are cached under build/pex-root.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

REPO = Path(__file__).resolve().parents[2]
# Full versions (the ones scripts/test smoke-tests) so that markers on python_full_version
# (cryptography's, for one) can be evaluated for a platform pex cannot run here.
PYTHONS = ("3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0")
ARCHES = ("x86_64", "aarch64")


class Bundle(NamedTuple):
    name: str
    extra: str
    program: str
    inject_args: tuple[str, ...] = ()


# The daemons carry prometheus_client too: a firewalled host cannot add the extra later.
# The gate runs on the external host from authorized_keys: no paramiko, only the base
# dependencies its command line loads (click, PyYAML, rich).
BUNDLES = {
    "poll": (Bundle("mint-poll", "poll,metrics", "mint-poll"),),
    "s3job": (Bundle("mint-s3job", "s3job,metrics", "mint-s3job"),),
    "burst": (Bundle("mint-burst", "burst,metrics", "mint-burst"),),
    "ssh": (
        Bundle("mint-ssh", "ssh", "mint-ssh"),
        Bundle("mint-ssh-gate", "", "mint-ssh", ("gate",)),
    ),
}


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise SystemExit("error: no version in pyproject.toml")
    return match.group(1)


def build_wheel(work: Path) -> Path:
    """The project as a wheel: pex then resolves it like any requirement (not the source tree)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(REPO)],
        check=True,
    )
    (wheel,) = work.glob("mint_tools-*.whl")
    return wheel


def platform_args(python: Optional[str]) -> list[str]:
    if python is not None:
        return ["--python", python]
    args: list[str] = []
    for arch in ARCHES:
        for version in PYTHONS:
            abi = "cp" + "".join(version.split(".")[:2])
            args += ["--platform", f"manylinux2014_{arch}-cp-{version}-{abi}"]
    return args


def build(bundle: Bundle, wheel: Path, out_dir: Path, python: Optional[str]) -> Path:
    """Write dist/<name>-<version>.pex (pex prints its path) and its .sha256 beside it."""
    target = out_dir / f"{bundle.name}-{project_version()}.pex"
    requirement = f"{wheel}[{bundle.extra}]" if bundle.extra else str(wheel)
    argv = [
        sys.executable,
        "-m",
        "pex",
        requirement,
        "--console-script",
        bundle.program,
        "--python-shebang",
        "/usr/bin/env python3",
        "--pex-root",
        str(REPO / "build" / "pex-root"),
        "--output-file",
        str(target),
        *platform_args(python),
    ]
    for arg in bundle.inject_args:
        argv += ["--inject-args", arg]
    subprocess.run(argv, check=True)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    Path(f"{target}.sha256").write_text(f"{digest}  {target.name}\n", encoding="ascii")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bundle", description=__doc__)
    parser.add_argument("tool", choices=sorted(BUNDLES))
    parser.add_argument("--out-dir", type=Path, default=REPO / "dist")
    parser.add_argument(
        "--python",
        help="build only for this interpreter (a quick local bundle) instead of every platform",
    )
    options = parser.parse_args()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mint-bundle-"))
    try:
        wheel = build_wheel(work)
        for bundle in BUNDLES[options.tool]:
            build(bundle, wheel, options.out_dir, options.python)
    except subprocess.CalledProcessError as exc:
        step = " ".join(str(arg) for arg in exc.cmd[1:4])
        sys.exit(f"error: {step} failed (exit {exc.returncode}); its messages are above")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

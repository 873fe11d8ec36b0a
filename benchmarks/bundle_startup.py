"""Size of each one-file bundle in dist/ and the start-up time of `--help` from it vs the venv.

    ./scripts/bundle poll   # (and ssh, s3job, burst) first
    .venv/bin/python benchmarks/bundle_startup.py [--runs 7] [--python /usr/bin/python3]

Each bundle runs with PYTHON and only PATH in its environment, as on a firewalled host.
"first" is the first run with an empty pex cache (pex unpacks the wheels it needs);
"warm" is the median of RUNS later runs; "venv" is the median of the venv's console script.
Prints the figures; asserts nothing. The pex cache lives in a /tmp dir removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default="/usr/bin/python3")
    options = parser.parse_args()
    bundles = sorted((REPO / "dist").glob("mint-*.pex"))
    if not bundles:
        sys.exit("no bundles in dist/: run ./scripts/bundle TOOL first")
    venv_bin = Path(sys.executable).parent
    print("bundle\tsize MiB\tfirst s\twarm s\tvenv s")
    for bundle in bundles:
        with tempfile.TemporaryDirectory() as pex_root:
            env = {"PATH": "/usr/bin:/bin", "PEX_ROOT": pex_root}
            argv = [options.python, str(bundle), "--help"]
            first = timed(argv, env)
            warm = statistics.median(timed(argv, env) for _ in range(options.runs))
        program = bundle.name.rsplit("-", 1)[0]
        venv = "-"
        if (venv_bin / program).exists():
            venv_argv = [str(venv_bin / program), "--help"]
            venv_env = {"PATH": f"{venv_bin}:/usr/bin:/bin"}
            venv_runs = [timed(venv_argv, venv_env) for _ in range(options.runs)]
            venv = f"{statistics.median(venv_runs):.2f}"
        size = bundle.stat().st_size / 2**20
        print(f"{bundle.name}\t{size:.1f}\t{first:.2f}\t{warm:.2f}\t{venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

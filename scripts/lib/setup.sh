# Shared set-up for ./scripts/test and ./scripts/demo (sourced, not run).
# Creates .venv, installs the project with every extra, installs the Debian
# packages the tests and demo need when running as root with apt, and
# prepares the path mypy uses to find mint_common.

# Debian packages: sshd for mint-ssh, rsync/nc for the legacy flow and ProxyCommand tests,
# `file` for MIME words, procps for process checks, time for /usr/bin/time -v in benchmarks,
# and a real one-host Slurm (scripts/lib/slurm_cluster.py) for mint-burst and mint-s3job.
DEBIAN_PACKAGES="openssh-server openssh-client rsync netcat-openbsd file procps time
slurmctld slurmd slurm-client munge"

step() { printf '\n== %s ==\n' "$*" >&2; }

ensure_debian_packages() {
    local missing=()
    command -v dpkg-query >/dev/null 2>&1 || return 0
    for pkg in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing Debian packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "note: missing Debian packages (${missing[*]}); tests that need them are skipped" >&2
    fi
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3.10 python3.9 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.9 or newer is needed" >&2
    return 1
}

ensure_venv() {
    local python stamp_file want
    if [ ! -x .venv/bin/python ]; then
        python=$(find_python)
        step "creating .venv with $python"
        "$python" -m venv .venv
    fi
    stamp_file=.venv/.mint-installed
    want=$(sha256sum pyproject.toml | cut -c1-16)
    if [ "$(cat "$stamp_file" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c 'import mint_common' 2>/dev/null; then
        step "installing mint-tools[all,test] into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
        echo "$want" > "$stamp_file"
    fi
    # mypy does not follow setuptools' editable-install finder; show it common/ as mint_common.
    mkdir -p build/typing
    ln -sfn ../../common build/typing/mint_common
}

setup_all() {
    ensure_debian_packages
    ensure_venv
    export PATH="$PWD/.venv/bin:$PATH"
}

tool_packages() {
    local pkg
    for pkg in mint_poll mint_ssh mint_s3job mint_burst; do
        [ -f "$pkg/__init__.py" ] && printf '%s\n' "$pkg"
    done
    return 0
}

# Every Python we claim must accept the code: vermin fails on anything newer than 3.9.
check_min_python() {
    local paths=(common tests benchmarks scripts/lib)
    local pkg
    while read -r pkg; do paths+=("$pkg"); done < <(tool_packages)
    vermin -t=3.9- --no-tips --violations --eval-annotations --quiet "${paths[@]}"
}

# The smoke set under other Pythons: the unit tests of mint_common and of the parsers,
# none of which need a service (Slurm, sshd, moto); the full suite runs on .venv's Python.
SMOKE_TESTS="tests/common tests/poll/test_stream.py tests/poll/test_stream_fallback.py
tests/burst/test_slurm.py tests/burst/test_pbs.py tests/ssh/test_protocol.py"
# Left out: the packaging test builds its own venv.
SMOKE_DESELECT="tests/common/test_packaging.py::test_base_install_provides_mint_common_and_no_common"

# pyenv's newest CPython of each minor version we claim (and the next), when installed.
smoke_pythons() {
    local root="${PYENV_ROOT:-$HOME/.pyenv}" minor python
    for minor in 9 10 11 12 13; do
        python=$(find "$root/versions" -maxdepth 3 -path "*/3.$minor.*/bin/python3" 2>/dev/null \
            | sort -V | tail -n 1)
        [ -n "$python" ] && printf '%s\n' "$python"
    done
    return 0
}

# A venv per Python with the runtime extras and pytest, cached under build/smoke/ by a
# digest of pyproject.toml (as .venv is); prints its directory.
smoke_venv() {
    local python=$1 version want dir
    version=$("$python" -c 'import platform; print(platform.python_version())')
    want=$(sha256sum pyproject.toml | cut -c1-16)
    dir="build/smoke/py$version-$want"
    if [ ! -f "$dir/.complete" ]; then
        rm -rf "build/smoke/py$version-"*
        "$python" -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
            -e '.[all]' pytest pytest-timeout hypothesis >&2
        touch "$dir/.complete"
    fi
    printf '%s\n' "$dir"
}

# `--help` of every command of every installed tool, in one process per Python.
smoke_help() {
    "$1" - <<'PY'
import sys
from importlib.metadata import distribution

import click
from click.testing import CliRunner

def walk(command, path):
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, [*path, name])

failed, count = [], 0
for entry in distribution("mint-tools").entry_points:
    if entry.group != "console_scripts":
        continue
    main = entry.load()
    for path in walk(main, []):
        count += 1
        result = CliRunner().invoke(main, [*path, "--help"], prog_name=entry.name)
        if result.exit_code != 0 or "Usage:" not in result.output:
            failed.append(" ".join([entry.name, *path, "--help"]) + f": {result.output[-300:]}")
print(f"--help of {count} commands: {len(failed)} failed", file=sys.stderr)
sys.exit("\n".join(failed) if failed else 0)
PY
}

run_smoke() {
    local python dir test deselect=()
    for test in $SMOKE_DESELECT; do deselect+=(--deselect "$test"); done
    for python in $(smoke_pythons); do
        step "smoke under $python"
        dir=$(smoke_venv "$python")
        smoke_help "$dir/bin/python"
        # shellcheck disable=SC2086  # SMOKE_TESTS is a list of paths without spaces
        "$dir/bin/python" -m pytest -q -p no:cacheprovider $SMOKE_TESTS "${deselect[@]}"
    done
}

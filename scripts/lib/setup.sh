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

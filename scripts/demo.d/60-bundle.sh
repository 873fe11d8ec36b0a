#!/usr/bin/env bash
# One-file install: mint-poll as a single pex that needs only python3, run from an empty
# environment the way a firewalled host would run it (built for this machine's python3 only,
# which is quick; ./scripts/bundle poll without --python builds the x86_64 + aarch64 file).
set -euo pipefail

. scripts/lib/demo-work.sh

echo "1. build the bundle (wheels cached in build/pex-root)"
python scripts/lib/bundle.py poll --python /usr/bin/python3 --out-dir "$work/dist" >/dev/null
bundle=$(ls "$work"/dist/mint-poll-*.pex)
echo "   $(basename "$bundle"): $(du -h "$bundle" | cut -f1)"
(cd "$work/dist" && sha256sum -c "$(basename "$bundle").sha256")

echo "2. copy it to a 'host' that has python3 and nothing else, and ask it for help"
mkdir -p "$work/host"
cp "$bundle" "$work/host/mint-poll.pex"
env -i PATH=/usr/bin:/bin /usr/bin/python3 "$work/host/mint-poll.pex" --version
env -i PATH=/usr/bin:/bin /usr/bin/python3 "$work/host/mint-poll.pex" --help | sed -n '1,3p'

echo "3. its check against a broker that is not there: FAIL rows, exit 1"
cat > "$work/host/mint-poll.yaml" <<YAML
url: http://127.0.0.1:9
site_id: nims-dev
token_file: $work/host/token
calc_base: $work/host/calc
state_dir: $work/host/state
commands:
  solve.sh: [/bin/true]
YAML
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/host/token"
chmod 600 "$work/host/token"
status=0
env -i PATH=/usr/bin:/bin /usr/bin/python3 "$work/host/mint-poll.pex" \
    --config "$work/host/mint-poll.yaml" check || status=$?
echo "   exit status: $status"
[ "$status" -eq 1 ]
echo "bundle demo: OK"

#!/usr/bin/env bash
# mint-poll: a rehearsal broker on loopback, a calculation registered as a workflow would,
# one poll by the agent, and the results as the workflow side receives them.
set -euo pipefail

. scripts/lib/demo-work.sh
umask 077

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
echo "1. start the rehearsal broker (site nims-dev may run create_inp_file.sh)"
mint-poll serve --port 0 --site nims-dev=create_inp_file.sh --token-file "$work/token" \
    > "$work/serve.out" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "   broker: $url"

mkdir -p "$work/calc" "$work/state" "$work/bin"
cat > "$work/bin/create_inp_file.sh" <<'SH'
#!/bin/sh
# A stand-in for a site's program: reads the parameter file, writes a result.
echo "running in $CALC_DIR with parameters: $CALC_PARAMETERS"
tr 'a-z' 'A-Z' < input.dat > result.dat
echo "done" >&2
SH
chmod 700 "$work/bin/create_inp_file.sh"
cat > "$work/mint-poll.yaml" <<YAML
url: ${url%/mi-distcomp-api}
site_id: nims-dev
token_file: $work/token
calc_base: $work/calc
state_dir: $work/state
min_free_mb: 1
commands:
  create_inp_file.sh: $work/bin/create_inp_file.sh
YAML

echo "2. the workflow side registers a calculation and allows it"
printf 'temperature = 300 K\npressure = 1 atm\n' > "$work/input.dat"
accept_id=$(python - "$url" "$work" <<'PY'
import sys
from pathlib import Path
from mint_poll.api import DistcompApi
url, work = sys.argv[1], Path(sys.argv[2])
with DistcompApi(url, (work / "token").read_text().strip()) as api:
    accept_id = api.add_calcinfo(
        "create_inp_file.sh", "nims-dev", parameters="case=demo",
        parameter_files={"input.dat": work / "input.dat"}, result_names=["result.dat"],
    )
    api.allow_wait_calc(accept_id)
print(accept_id)
PY
)
echo "   accept_id: $accept_id"

echo "3. mint-poll check, then mint-poll once runs it"
mint-poll --config "$work/mint-poll.yaml" check
mint-poll --config "$work/mint-poll.yaml" once
mint-poll --config "$work/mint-poll.yaml" status

echo "4. the workflow side collects the results"
python - "$url" "$work" "$accept_id" <<'PY'
import sys
from pathlib import Path
from mint_poll.api import DistcompApi
url, work, accept_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
with DistcompApi(url, (work / "token").read_text().strip()) as api:
    print(f"   calc-status: {api.calc_status(accept_id)}")
    result = api.get_calc_result(accept_id, work / "results")
for item in result.files:
    print(f"   --- {item.name} ({item.size} bytes)")
    if item.path is not None:
        for line in item.path.read_text(encoding="utf-8").splitlines():
            print(f"   {line}")
PY
echo "mint-poll demo: OK"

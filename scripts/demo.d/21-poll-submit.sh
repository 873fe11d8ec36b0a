#!/usr/bin/env bash
# mint-poll submit: the workflow side of the WebAPI method, end to end on loopback.
# A rehearsal server (`mint-poll serve`) and a polling agent (`mint-poll run`) play MInt and
# the external computer; `mint-poll submit` plays the MInt module script.
set -euo pipefail

work=$(mktemp -d /tmp/mint-poll-submit-demo.XXXXXX)
pids=()
cleanup() {
    # Newest first: the agent finishes its last report while the server is still up.
    local index
    for ((index = ${#pids[@]} - 1; index >= 0; index--)); do
        kill -TERM "${pids[index]}" 2>/dev/null || true
        wait "${pids[index]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

token=$(python -c 'import secrets; print(secrets.token_hex(32))')
printf '%s\n' "$token" > "$work/token"
chmod 600 "$work/token"

echo "--- start the rehearsal server (site demo-site allows copy.sh, fail.sh, sleep.sh)"
MINT_POLL_SERVE_TOKEN=$token mint-poll -q serve --port 0 \
    --site demo-site=copy.sh,fail.sh,sleep.sh > "$work/serve.out" &
pids+=($!)
for _ in $(seq 50); do
    grep -q '^listening on ' "$work/serve.out" 2>/dev/null && break
    sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$work/serve.out")
url=${base%/mi-distcomp-api}
echo "server: $base"

echo "--- start the agent (mint-poll run) with its command allowlist"
mkdir -p "$work/calc"
cat > "$work/agent.yaml" <<EOF
url: $url
site_id: demo-site
token_file: $work/token
calc_base: $work/calc
state_dir: $work/state
poll_interval: 0.2
stop_grace: 1
commands:
  copy.sh: [/bin/sh, -c, 'cp "入力データ.txt" 結果.txt && cp image.bin image.out && echo "parameters: \$CALC_PARAMETERS"']
  fail.sh: [/bin/sh, -c, 'echo "simulated failure" >&2; exit 2']
  sleep.sh: [/bin/sleep, "6"]
EOF
mint-poll -q --config "$work/agent.yaml" run 2> "$work/agent.log" &
pids+=($!)

cat > "$work/workflow.yaml" <<EOF
url: $url
site_id: demo-site
token_file: $work/token
EOF
module="$work/module"
mkdir -p "$module"
cd "$module"
printf 'こんにちは、MInt\n' > 入力データ.txt
python -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 64)' > image.bin

echo "--- submit: a text file with a Japanese name and a binary file, results back here"
mint-poll --config "$work/workflow.yaml" submit --command copy.sh \
    --input 入力データ.txt --input image.bin --result 結果.txt --result image.out \
    --parameters "温度=300" --poll-interval 0.2 --out-dir results --json > summary.json
python - <<'PY'
import json
summary = json.load(open("summary.json"))
print(f"accept_id {summary['accept_id']}: {summary['status']} (exit {summary['exit_status']})")
for entry in summary["files"]:
    print(f"  {entry['name']:<24} {entry['size']:>6} bytes  sha256 {entry['sha256'][:16]}")
PY
cmp image.bin results/image.out && echo "image.out is byte-identical to image.bin"
echo "結果.txt: $(cat results/結果.txt)"
echo "計算標準出力.txt: $(cat results/計算標準出力.txt)"

expect_status() {
    local want=$1
    shift
    local got=0
    "$@" || got=$?
    if [ "$got" -ne "$want" ]; then
        echo "expected exit $want, got $got" >&2
        return 1
    fi
    echo "exit status $got, as documented"
}

echo "--- an abnormal remote run: exit 1, its stderr file is still written"
expect_status 1 mint-poll -q --config "$work/workflow.yaml" submit --command fail.sh \
    --poll-interval 0.2 --out-dir failed
echo "計算標準エラー出力.txt: $(cat failed/計算標準エラー出力.txt)"

echo "--- a command the server does not allow: refused at registration, exit 1"
expect_status 1 mint-poll -q --config "$work/workflow.yaml" submit --command rm-rf.sh

echo "--- a missing input file: exit 66, nothing sent"
expect_status 66 mint-poll -q --config "$work/workflow.yaml" submit --command copy.sh \
    --input no-such-file.dat

echo "--- the legacy positional form of mi-system-wf.py (token on argv: warned about)"
mint-poll submit-legacy --poll-interval 0.2 "$url" demo-site "$token" copy.sh \
    入力データ.txt:image.bin 結果.txt "温度=300" 2> legacy.err
grep -m 1 'process list' legacy.err | sed 's/^.*WARNING //' || true
echo "legacy run wrote: $(ls 結果.txt 計算標準出力.txt | tr '\n' ' ')"

echo "--- --timeout 2 on a 6 s job: the registration is force-cancelled, exit 75"
expect_status 75 mint-poll -q --config "$work/workflow.yaml" submit --command sleep.sh \
    --poll-interval 0.2 --timeout 2
python - "$url" "$work/token" <<'PY'
import sys
from mint_poll.api import DistcompApi
with DistcompApi(sys.argv[1], open(sys.argv[2]).read().strip()) as api:
    table = api.get_calcinfo()["errors"][0]["table"]
print(f"calculations left on the server: {len(table)}")
sys.exit(1 if table else 0)
PY

#!/usr/bin/env bash
# mint-burst: what-if simulation on the example traces (ours against the seed's loop), then
# the tool at work. As root with Debian's Slurm packages: a real one-host Slurm
# (scripts/lib/slurm_cluster.py) whose "VMs" are slurmds started and stopped by the command
# provider's scripts. Otherwise (or with MINT_DEMO_SLURM=fake): a fake Slurm
# (tests/burst/fakes) and a moto EC2 server.
set -euo pipefail

. scripts/lib/demo-work.sh

traces=examples/mint-burst/traces
for trace in burst trickle mix; do
    echo; echo "--- mint-burst simulate --trace $traces/$trace.sacct --policy both (16 nodes, 180 s boot)"
    mint-burst simulate --trace "$traces/$trace.sacct" --policy both --max-nodes 16 --boot-time 180
done
echo; echo "--- the same trickle with squeue failing for 15 minutes at 7.5 h (jobs killed: last column)"
mint-burst simulate --trace "$traces/trickle.sacct" --policy both --squeue-fail-at 7.5h,15m

real_slurm_usable() {
    case "${MINT_DEMO_SLURM:-auto}" in
        fake) return 1 ;;
        real) return 0 ;;
    esac
    [ "$(id -u)" -eq 0 ] && python3 scripts/lib/slurm_cluster.py available 2>/dev/null
}

# Prints each step's actions; stops when the condition (a shell command) holds.
steps_until() {
    local what=$1 condition=$2 n
    for n in $(seq 1 60); do
        mint-burst once --config "$work/mint-burst.yaml" 2>/dev/null \
            | grep -v '^no action needed$' | sed "s/^/  step $n: /" || true
        if eval "$condition"; then return 0; fi
        sleep 1
    done
    echo "gave up waiting for $what" >&2
    return 1
}

burst_on_real_slurm() {
    cluster="$work/slurm"
    trap 'python3 scripts/lib/slurm_cluster.py down "$cluster"; cleanup' EXIT
    python3 scripts/lib/slurm_cluster.py up "$cluster"
    export SLURM_CONF="$cluster/slurm.conf"
    echo; echo "a real Slurm ($(sinfo --version)) on loopback: nodes c1-c4 in partition cloud," \
        "defined in slurm.conf but no slurmd running (no VM yet)"
    sinfo --Node

    # The site's cloud scripts: create boots a "VM" (starts the node's slurmd), list
    # prints the live ones, delete stops it. A real site wraps its VCP SDK / cloud CLI here.
    cat > "$work/cloud-vm" <<PY
#!$(command -v python)
import json, os, subprocess, sys, uuid
db_path, cluster = "$work/vms.json", ["python3", "$PWD/scripts/lib/slurm_cluster.py"]
request = json.load(sys.stdin)
db = json.load(open(db_path)) if os.path.exists(db_path) else {}
if request["action"] == "create":
    subprocess.run(cluster + ["node-start", "$cluster", request["node"]], check=True, stdout=sys.stderr)
    vm = "vm-" + uuid.uuid4().hex[:8]
    db[vm] = {"node": request["node"], "ip": request["ip"]}
    answer = {"instance_id": vm}
elif request["action"] == "list":
    answer = {"instances": [{"instance_id": k, "state": "running", **v} for k, v in db.items()]}
else:
    for vm in request["instance_ids"]:
        if vm in db:
            subprocess.run(cluster + ["node-stop", "$cluster", db.pop(vm)["node"]], check=True, stdout=sys.stderr)
    answer = {}
json.dump(db, open(db_path, "w"))
print(json.dumps(answer))
PY
    chmod +x "$work/cloud-vm"
    # Launches run in parallel threads, so the script must not race on its file: one at a time.
    printf '#!/bin/sh\nexec flock %s %s "$@"\n' "$work/vms.lock" "$work/cloud-vm" > "$work/cloud"
    chmod +x "$work/cloud"
    python -c 'import json; print(json.dumps({f"172.30.2.{100 + i}": f"c{i}" for i in range(1, 5)}))' > "$work/hosts.json"
    cat > "$work/mint-burst.yaml" <<YAML
queue: cloud
cluster: demo
hosts_file: $work/hosts.json
state_file: $work/state/state.json
idle_timeout: 3
boot_timeout: 60
poll_interval: 1
provider: command
command:
  create: [$work/cloud, create]
  list: [$work/cloud, list]
  delete: [$work/cloud, delete]
  timeout: 60
YAML

    mkdir -p "$work/jobs"
    submit() { sbatch --parsable --chdir="$work/jobs" --output="$work/jobs/%j.out" "$@"; }
    a=$(submit -N1 --wrap 'sleep 3; hostname')
    b=$(submit -N2 --wrap 'srun sleep 3')
    c=$(submit -N1 --dependency=afterok:"$a" --wrap 'echo after job $a')
    echo; echo "--- three jobs: $a (1 node), $b (2 nodes), $c (1 node, after $a)"
    squeue --format='%.4i %.3D %.8T %R'

    echo; echo "--- mint-burst check (real Slurm, the command provider's list script)"
    mint-burst check --config "$work/mint-burst.yaml" || true
    echo; echo "--- mint-burst once --dry-run: 3 nodes (job $c waits for job $a: no demand yet)"
    mint-burst once --dry-run --config "$work/mint-burst.yaml" 2>/dev/null
    echo; echo "--- mint-burst once, again and again (as the timer would): nodes boot, join, run the jobs"
    done_all="[ -z \"\$(squeue --noheader --jobs=$a,$b,$c 2>/dev/null)\" ]"
    steps_until "the jobs to finish" "$done_all"
    echo "where the jobs ran (Slurm's own record):"
    for job in "$a" "$b" "$c"; do
        echo "  job $job: $(scontrol show job -o "$job" | tr ' ' '\n' | grep -E '^(JobState|NodeList)=' | tr '\n' ' ')"
    done
    echo; echo "--- mint-burst status"
    mint-burst status --config "$work/mint-burst.yaml"

    echo; echo "--- idle for idle_timeout (3 s): each node is drained, taken down and its VM deleted"
    no_vm='[ "$(python -c "import json; print(len(json.load(open(\"$work/vms.json\"))))")" = 0 ]'
    steps_until "the idle nodes to go" "$no_vm"
    sinfo --Node

    echo; echo "--- slurmctld stopped: once reads nothing, decides nothing, exits 69"
    python3 scripts/lib/slurm_cluster.py ctld-stop "$cluster"
    set +e
    mint-burst once --config "$work/mint-burst.yaml" 2>&1 | grep -v '^[0-9-]*T'
    status=${PIPESTATUS[0]}
    set -e
    echo "exit status $status"
    [ "$status" -eq 69 ]
}

burst_on_fake_slurm() {
    . scripts/lib/moto-server.sh
    endpoint="http://127.0.0.1:$moto_port"
    read -r subnet ami < <(python - "$endpoint" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1])
vpc = ec2.create_vpc(CidrBlock="172.30.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="172.30.2.0/24")["Subnet"]["SubnetId"]
print(subnet, ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
PY
)
    echo; echo "moto EC2 on $endpoint, subnet $subnet (172.30.2.0/24), AMI $ami"

    # The fake scheduler answers squeue/sinfo/scontrol from this file: three jobs wait in
    # partition "cloud"; the seed's four cloud nodes are down (never started).
    export FAKE_SCHED_STATE="$work/slurm.json" FAKE_SCHED_PYTHON=python PATH="$PWD/tests/burst/fakes:$PATH"
    cat > "$FAKE_SCHED_STATE" <<'JSON'
{"partitions": ["cloud"],
 "jobs": [{"id": "18", "state": "PENDING", "nodes": 1, "reason": "Resources"},
          {"id": "19", "state": "PENDING", "nodes": 2, "reason": "Priority"},
          {"id": "20", "state": "PENDING", "nodes": 1, "reason": "Dependency"}],
 "nodes": {"c1": {"state": "down", "flags": "*"}, "c2": {"state": "down", "flags": "*"},
           "c3": {"state": "down", "flags": "*"}, "c4": {"state": "down", "flags": "*"}}}
JSON
    cp examples/mint-burst/env "$work/env"
    python -c 'import json; print(json.dumps({f"172.30.2.{100 + i}": f"c{i}" for i in range(1, 5)}))' > "$work/hosts.json"
    cat > "$work/mint-burst.yaml" <<YAML
hosts_file: $work/hosts.json
state_file: $work/state/state.json
ec2:
  endpoint_url: $endpoint
  region: us-east-1
  image_id: $ami
  instance_types: [c5.xlarge, m5.xlarge]
  subnets: [$subnet]
YAML
    # The seed's env file, as a systemd EnvironmentFile would pass it.
    set -a; . "$work/env"; set +a

    echo; echo "--- mint-burst check (fake Slurm, EC2 DryRun permission checks on moto)"
    mint-burst check --config "$work/mint-burst.yaml" || true
    echo; echo "--- mint-burst once --dry-run: 3 nodes needed (job 20 waits on a dependency, so not counted)"
    mint-burst once --dry-run --config "$work/mint-burst.yaml"
    echo; echo "--- mint-burst once: launches them in parallel, tagged, with their fixed IPs"
    mint-burst once --config "$work/mint-burst.yaml" 2>/dev/null
    python - "$endpoint" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1])
for r in ec2.describe_instances(Filters=[{"Name": "tag:mint-burst:cluster", "Values": ["hybridcloud"]}])["Reservations"]:
    for i in r["Instances"]:
        tags = {t["Key"]: t["Value"] for t in i["Tags"]}
        print(f"  {i['InstanceId']}  {i['PrivateIpAddress']}  {i['InstanceType']}  node={tags['mint-burst:node']}")
PY
    echo; echo "--- mint-burst status"
    mint-burst status --config "$work/mint-burst.yaml"
    echo; echo "--- squeue now fails: once exits 69 and removes nothing"
    python - <<'PY'
import json, os
path = os.environ["FAKE_SCHED_STATE"]
state = json.load(open(path))
state["fail"] = {"squeue": {"rc": 1, "stderr": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"}}
json.dump(state, open(path, "w"))
PY
    set +e
    mint-burst once --config "$work/mint-burst.yaml" 2>&1 | grep -v '^[0-9-]*T'
    status=${PIPESTATUS[0]}
    set -e
    echo "exit status $status; nodes still in the table: $(mint-burst status --no-scheduler --json --config "$work/mint-burst.yaml" | python -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))')"
    [ "$status" -eq 69 ]
}

if real_slurm_usable; then
    burst_on_real_slurm
else
    echo; echo "(no real Slurm here: not root, packages missing, or MINT_DEMO_SLURM=fake; using the fakes)"
    burst_on_fake_slurm
fi

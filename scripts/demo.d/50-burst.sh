#!/usr/bin/env bash
# mint-burst: what-if simulation on the example traces (ours against the seed's loop), then
# one dry run and one real step against a fake Slurm (tests/burst/fakes) and a moto EC2 server.
set -euo pipefail

. scripts/lib/demo-work.sh

traces=examples/mint-burst/traces
for trace in burst trickle mix; do
    echo; echo "--- mint-burst simulate --trace $traces/$trace.sacct --policy both (16 nodes, 180 s boot)"
    mint-burst simulate --trace "$traces/$trace.sacct" --policy both --max-nodes 16 --boot-time 180
done
echo; echo "--- the same trickle with squeue failing for 15 minutes at 7.5 h (jobs killed: last column)"
mint-burst simulate --trace "$traces/trickle.sacct" --policy both --squeue-fail-at 7.5h,15m

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

#!/usr/bin/env bash
# mint-s3job end to end on loopback: a moto S3 server stands in for the bucket and a
# recorded-output fake sbatch for Slurm; everything else is the real tool.
set -euo pipefail

. scripts/lib/demo-work.sh

. scripts/lib/moto-server.sh
port=$moto_port
export MINT_S3JOB_ENDPOINT_URL="http://127.0.0.1:$port" MINT_S3JOB_BUCKET=demo-jobs
export MINT_S3JOB_REGION=us-east-1 MINT_S3JOB_POLL_INTERVAL=0.2s
python -c "import boto3, os; boto3.client('s3', endpoint_url=os.environ['MINT_S3JOB_ENDPOINT_URL']).create_bucket(Bucket='demo-jobs')"
echo "moto S3 on 127.0.0.1:$port, bucket demo-jobs"

# Fake Slurm: prints the real "Submitted batch job N" line and logs its calls.
export FAKE_SLURM_LOG="$work/slurm.log" PATH="$PWD/tests/s3job/fakes:$PATH"

echo; echo "--- head node: mint-s3job check --head-node"
mint-s3job check --head-node --workdir "$work/head"

mkdir -p "$work/src/input/sub" "$work/src/results"
printf '#!/bin/bash\n#SBATCH -J demo\nmkdir -p out && wc -c input/params.txt input/sub/* > out/sizes.txt\n' > "$work/src/run.sh"
echo "temperature=1200K" > "$work/src/input/params.txt"
head -c 300000 /dev/urandom > "$work/src/input/sub/データ.bin"

echo; echo "--- on premises: submit (stdout is the prefix only)"
prefix=$(mint-s3job submit --script "$work/src/run.sh" --input "$work/src/input")
echo "prefix: $prefix"
mint-s3job list

echo; echo "--- head node: three dispatchers at once (as S3 events would start them)"
for n in 1 2 3; do mint-s3job dispatch --workdir "$work/head" > "$work/dispatch$n.out" 2>/dev/null & done
wait %2 %3 %4 2>/dev/null || true
cat "$work"/dispatch*.out
echo "sbatch was called $(grep -c '"sbatch"' "$FAKE_SLURM_LOG") time(s)"

echo; echo "--- the job runs (here: bash), then Slurm's EpilogSlurmctld runs mint-s3job epilog"
(cd "$work/head/$prefix" && bash job-aws-run.sh)
SLURM_JOB_ID=4242 SLURM_JOB_WORK_DIR="$work/head/$prefix" SLURM_JOB_EXIT_CODE2=0:0 \
    mint-s3job epilog --workdir "$work/head"

echo; echo "--- on premises: wait, status, fetch"
mint-s3job wait "$prefix" --timeout 30s
mint-s3job status "$prefix"
mint-s3job fetch "$prefix" --out-dir "$work/results"
cat "$work/results/out/sizes.txt"
cmp "$work/src/input/sub/データ.bin" "$work/results/input/sub/データ.bin" && echo "binary file with a Japanese name: byte-exact"
mint-s3job fetch "$prefix" --out-dir "$work/results"

echo; echo "--- a failing sbatch becomes JOB_ERROR; wait prints it and exits 1"
printf '#!/bin/bash\n#FAKE_SBATCH_FAIL\n' > "$work/src/bad.sh"
bad=$(mint-s3job submit --script "$work/src/bad.sh")
mint-s3job dispatch --workdir "$work/head" || echo "dispatch exit status: $?"
status=0; mint-s3job wait "$bad" || status=$?
echo "wait exit status: $status"
[ "$status" -eq 1 ]
mint-s3job clean "$bad"
echo "mint-s3job demo OK"

#!/bin/bash
# A MInt module script: run job-aws-run.sh on the cloud cluster with the files in ./input,
# then bring the results back into ./output. Exit codes: 0 ok, 1 job failed, 75 timed out,
# anything else: see `mint-s3job --help` / docs/mint-s3job.md.
set -euo pipefail
prefix=$(/opt/mint-tools/bin/mint-s3job submit --script job-aws-run.sh input)
echo "submitted as ${prefix}" >&2
status=0
/opt/mint-tools/bin/mint-s3job wait "${prefix}" --timeout 86400 || status=$?
# Fetch even after a failure (logs are results too); report the wait status first.
fetch_status=0
/opt/mint-tools/bin/mint-s3job fetch "${prefix}" --out-dir output --exclude 'input/*' || fetch_status=$?
if [ "${status}" -eq 0 ]; then status=${fetch_status}; fi
exit "${status}"

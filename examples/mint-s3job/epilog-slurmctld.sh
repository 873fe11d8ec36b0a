#!/bin/bash
# Slurm runs EpilogSlurmctld without arguments, so point it at this wrapper:
#   /opt/slurm/etc/slurm.conf:  EpilogSlurmctld=/opt/mint/libexec/mint-s3job-epilog.sh
# It reads SLURM_JOB_ID, SLURM_JOB_WORK_DIR and SLURM_JOB_EXIT_CODE(2) from Slurm and
# ignores jobs whose work directory is not under the configured workdir.
set -euo pipefail
exec /opt/mint/bin/mint-s3job epilog --log-file /var/log/mint-s3job-epilog.log

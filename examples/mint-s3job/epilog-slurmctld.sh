#!/bin/bash
# Slurm's EpilogSlurmctld for mint-s3job (replaces the legacy epilog.sh). Install it as e.g.
#   /opt/mint-tools/libexec/mint-s3job-epilog.sh   and in slurm.conf:
#   EpilogSlurmctld=/opt/mint-tools/libexec/mint-s3job-epilog.sh
#
# slurmctld runs it as SlurmUser, without arguments, in an environment of its own making:
# only SLURM_* variables (SLURM_JOB_ID, SLURM_JOB_WORK_DIR, SLURM_JOB_COMMENT,
# SLURM_JOB_EXIT_CODE2, ...), no PATH, no HOME, nothing of slurmctld's own environment
# (seen on Slurm 22.05.8). Settings therefore come from files only: mint-s3job's config
# (/etc/mint/mint-s3job.yaml: bucket, region, endpoint_url, workdir) and, if present, a
# settings file beside this script named like it with .conf for .sh
# (/opt/mint-tools/libexec/mint-s3job-epilog.conf), read as shell:
#   mint_s3job=/opt/mint-tools/bin/mint-s3job  # the command (default below)
#   config=/etc/mint/mint-s3job-head.yaml      # an extra --config file (optional)
#   log_file=/var/log/mint-s3job-epilog.log    # where the epilog logs (default below)
#   export AWS_SHARED_CREDENTIALS_FILE=/etc/mint/aws-credentials   # no instance role
# It must belong to root or to the user running this script and be writable by nobody
# else. Everything the epilog and this wrapper say goes to log_file as well: slurmctld
# keeps only the exit status (slurmctld.log: "EpilogSlurmctld exit status 77:0").
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mint_s3job=/opt/mint-tools/bin/mint-s3job
config=
log_file=/var/log/mint-s3job-epilog.log
settings="${0%.sh}.conf"
say() {
    echo "mint-s3job-epilog: $*" >&2
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) mint-s3job-epilog: $*" >>"$log_file" 2>/dev/null || true
}
if [[ -e "$settings" ]]; then
    owner=$(stat -c %u "$settings")
    if [[ ( "$owner" != 0 && "$owner" != "$(id -u)" ) || -n "$(find "$settings" -maxdepth 0 -perm /022)" ]]; then
        say "refusing $settings: not owned by root or $(id -un), or writable by others"
        exit 78
    fi
    # shellcheck source=/dev/null
    source "$settings"
fi
if [[ ! -x "$mint_s3job" ]]; then
    found=$(command -v mint-s3job || true)
    if [[ -z "$found" ]]; then
        say "$mint_s3job is not an executable file and mint-s3job is not on PATH; set mint_s3job= in $settings"
        exit 69
    fi
    mint_s3job=$found
fi
args=(epilog --log-file "$log_file")
if [[ -n "$config" ]]; then
    args+=(--config "$config")
fi
if { : >>"$log_file"; } 2>/dev/null; then
    exec "$mint_s3job" "${args[@]}" 2>>"$log_file"
fi
exec "$mint_s3job" "${args[@]}"

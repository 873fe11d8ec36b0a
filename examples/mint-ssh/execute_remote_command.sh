#!/bin/bash
# Program (B) for a MInt module: replaces the legacy execute_remote_command.sample.sh.
# Sends the inputs, runs program (C) on the external computer, fetches everything back,
# and exits with the remote program's status (0 ok, 1 failed, 69/74/77 our own failures).
set -euo pipefail

host=ssh-node01
inputs=(input.dat params.json)

input_args=()
for f in "${inputs[@]}"; do
  input_args+=(--input "$f")
done

# Without a command after `--`, the configured remote program runs (by default
# ~/misrc_remote_workflow/scripts/execute_remote-side_program_ssh.sh, as the manuals describe).
exec /opt/mint-tools/bin/mint-ssh run "$host" "${input_args[@]}" --out-dir . --exit-code-file remote-exit-code

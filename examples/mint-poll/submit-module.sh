#!/usr/bin/env bash
# Example MInt module script ("program (A)") that runs its calculation on an external
# computer through the WebAPI method and leaves the results in the module's directory.
#
# It replaces a call such as
#   python mi-system-wf.py https://nims.mintsys.jp nims-dev "$TOKEN" create_inp_file.sh \
#       input.dat:conditions.json out.dat:summary.csv "$PARAMS"
# by the same calculation without the token on the command line (it comes from
# token_file in ~/.config/mint/mint-poll.yaml, see submit-workflow.yaml).
set -euo pipefail

PARAMS=${PARAMS:-"temperature=300"}

# Module-specific pre-processing would go here (write input.dat, conditions.json).

status=0
/opt/mint-tools/bin/mint-poll submit \
    --site nims-dev \
    --command create_inp_file.sh \
    --input input.dat --input conditions.json \
    --result out.dat --result summary.csv \
    --parameters "$PARAMS" \
    --timeout 21600 \
    --json > submit-summary.json || status=$?

case $status in
    0)  echo "remote calculation completed; results are in $PWD" ;;
    1)  echo "remote calculation failed or a result is missing: see 計算標準エラー出力.txt" >&2 ;;
    66) echo "an input file is missing; nothing was sent" >&2 ;;
    69) echo "the MInt WebAPI stayed unreachable" >&2 ;;
    75) echo "no result within 6 hours; the registration was cancelled" >&2 ;;
    77) echo "the API token was refused" >&2 ;;
    78) echo "mint-poll configuration error" >&2 ;;
    *)  echo "mint-poll submit ended with status $status" >&2 ;;
esac
exit "$status"

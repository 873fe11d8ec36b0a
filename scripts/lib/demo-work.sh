# A scratch dir $work for one demo section, and $server_pid for a background server the
# section may start; both are cleaned up when the section exits. Sourced.

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

#!/usr/bin/env bash
# mint-ssh demo: a throwaway OpenSSH sshd on 127.0.0.1, then run / check / runs / gate against it.
set -euo pipefail

say() { printf '\n== %s\n' "$*"; }

SSHD=""
for candidate in /usr/sbin/sshd /usr/bin/sshd; do
  [[ -x $candidate ]] && SSHD=$candidate && break
done
if [[ -z $SSHD ]] || ! command -v ssh-keygen >/dev/null; then
  say "mint-ssh: SKIPPED - sshd/ssh-keygen are not installed (apt-get install openssh-server openssh-client)"
  exit 0
fi
if [[ $(id -u) -eq 0 && ! -d /run/sshd ]]; then
  mkdir -m 755 /run/sshd || {
    say "mint-ssh: SKIPPED - cannot create /run/sshd, which sshd needs when run as root"
    exit 0
  }
fi

work=$(mktemp -d /tmp/mint-ssh-demo.XXXXXX)
sshd_pid=""
cleanup() {
  [[ -n $sshd_pid ]] && kill "$sshd_pid" 2>/dev/null && wait "$sshd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
user=$(id -un)
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
cat >"$work/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
CONF
"$SSHD" -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "$sshd_pid" 2>/dev/null; then
  say "mint-ssh: SKIPPED - the throwaway sshd did not start:"
  cat "$work/sshd.log"
  exit 0
fi
say "mint-ssh: throwaway sshd on 127.0.0.1:$port (user $user, keys in $work)"

cat >"$work/ssh_config" <<CONF
Host demo-node
  HostName 127.0.0.1
  Port $port
  User $user
  IdentityFile $work/client_key
  UserKnownHostsFile $work/known_hosts
  ServerAliveInterval 15
CONF
cat >"$work/mint-ssh.yaml" <<CONF
ssh_config: $work/ssh_config
state_dir: $work/state
remote_program: /bin/sh
workdir_base: $work/remote
retry: "retry:2,1"
CONF
mkdir -m 700 "$work/remote"
ms() { mint-ssh --config "$work/mint-ssh.yaml" "$@"; }

say "an unknown host key is refused (exit 77) and its fingerprint shown"
set +e
ms run demo-node -- true; echo "exit status $?"
set -e

say "check with --accept-new-host-key records it, then every step is checked"
ms check demo-node --accept-new-host-key || true

mkdir -p "$work/in" "$work/out"
printf '3.0 4.0\n' >"$work/in/入力.txt"
head -c 4096 /dev/urandom >"$work/in/mesh.bin"
say "run: upload 2 files (one with a Japanese name), compute remotely, fetch the results"
ms run demo-node --input "$work/in/入力.txt" --input "$work/in/mesh.bin" --out-dir "$work/out" \
  -- sh -c 'wc -c 入力.txt mesh.bin | tee 結果.txt'
echo "fetched:"; ls -1 "$work/out"

say "a remote failure: exit 1, the status in --exit-code-file, the remote dir kept"
set +e
ms run demo-node --out-dir "$work/out2" --exit-code-file "$work/status" -- sh -c 'echo oops >&2; exit 3'
echo "mint-ssh exit status $? ; remote status file says $(cat "$work/status")"
set -e

say "runs: the local run records"
ms runs

say "gate: the same key restricted to a forced command; run still works, a shell does not"
printf 'command="%s gate --allow sh --base %s --no-syslog",restrict %s\n' "$(command -v mint-ssh)" "$work/remote" \
  "$(cat "$work/client_key.pub")" >"$work/authorized_keys"
ms -q run demo-node --out-dir "$work/out3" -- sh -c 'echo allowed through the gate'
set +e
ssh -F "$work/ssh_config" -o BatchMode=yes demo-node 'cat /etc/passwd'
echo "ssh 'cat /etc/passwd' through the gate: exit status $?"
set -e
say "mint-ssh demo done"

# Start a moto server (S3, EC2, ...) on 127.0.0.1 with an ephemeral port, for the demo sections.
# Sourced; needs $work (a scratch dir). Sets $server_pid and $moto_port and exports fake AWS
# credentials so nothing can reach a real AWS account.

# Fake keys of the real shapes (a 20-character AKIA... id, a 40-character secret), new each
# run: the tools mask the secret in their logs, and a short word like "demo" would also be
# masked inside names such as the bucket "demo-jobs".
read -r AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY < <(python - <<'PY'
import base64, secrets, string
key_id = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
print(key_id, base64.b64encode(secrets.token_bytes(30)).decode())
PY
)
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE

python - "$work/moto-port" <<'PY' &
import logging, os, signal, sys, threading
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(str(server.get_host_and_port()[1]))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
server.stop()
PY
server_pid=$!
for _ in $(seq 100); do [ -s "$work/moto-port" ] && break; sleep 0.1; done
moto_port=$(cat "$work/moto-port")

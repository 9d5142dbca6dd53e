#!/usr/bin/env bash
# Prepare a Debian machine for the agent, its demo and its tests (idempotent, run as root):
# system packages, a virtualenv in .venv with the project, and a local RabbitMQ if none answers.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v socat >/dev/null || need+=(socat)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v tshark >/dev/null || need+=(tshark)
command -v tcpdump >/dev/null || need+=(tcpdump)  # tests compare `sniff --filter` with it
# `sniff --filter` compiles and matches with libpcap (tcpdump depends on it too)
compgen -G '/usr/lib/*/libpcap.so.*' >/dev/null || compgen -G '/lib/*/libpcap.so.*' >/dev/null \
    || need+=("$(apt-cache show libpcap0.8t64 >/dev/null 2>&1 && echo libpcap0.8t64 || echo libpcap0.8)")
command -v openssl >/dev/null || need+=(openssl)
command -v prometheus >/dev/null || need+=(prometheus)  # a real one scrapes --metrics in a test
command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
command -v runuser >/dev/null || need+=(util-linux)  # the test cluster runs as user rabbitmq
command -v setpriv >/dev/null || need+=(util-linux)  # tests run the agent as nobody + CAP_NET_ADMIN
# tests check examples/systemd/ with `systemd-analyze verify` (no running systemd needed)
command -v systemd-analyze >/dev/null || need+=(systemd)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

venv="$top/.venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    python3 -m venv "$venv"
fi
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$top/setup.py" -nt "$stamp" ]; then
    echo "setup: installing the project into $venv"
    # it was called `agent` before it became ip-over-amqp: not two of them in one venv
    if "$venv/bin/pip" show agent 2>/dev/null \
            | grep -qxF -e "Location: $top" -e "Editable project location: $top"; then
        "$venv/bin/pip" uninstall -q -y agent >/dev/null 2>&1 || true
    fi
    if ! "$venv/bin/pip" install -q -e "$top[test]" >"$venv/pip.log" 2>&1; then
        cat "$venv/pip.log" >&2
        exit 1
    fi
    touch "$stamp"
fi

broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! broker_up; then
    echo "setup: starting a local RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do broker_up && break; sleep 1; done
    broker_up || { echo "setup: RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
fi

# the management HTTP API (`agent session` and its tests); enabling is idempotent
mgmt_up() { (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; }
if ! mgmt_up; then
    echo "setup: enabling the rabbitmq_management plugin"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
for _ in $(seq 1 60); do
    code=$(python3 - <<'PY' 2>/dev/null || true
import base64, urllib.request
req = urllib.request.Request("http://127.0.0.1:15672/api/overview")
req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
print(urllib.request.urlopen(req, timeout=3).status)
PY
)
    [ "$code" = 200 ] && break
    sleep 1
done
[ "$code" = 200 ] || { echo "setup: the RabbitMQ management API does not answer on 127.0.0.1:15672" >&2; exit 1; }

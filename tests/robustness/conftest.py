"""A live node tried as an outside tester would: a real ``rtserver serve`` process (on a
real Redis, push on), plain sockets, and a sentinel client that must keep being served.

``LiveNode.assert_serving()`` is the invariant every robustness test checks after each
input: the process is alive, the sentinel's WebSocket still answers a ping, and an event
published now still reaches it. Each property tries 150 inputs (``RT_ROBUSTNESS_EXAMPLES``
sets another number, for a longer search): new ones on every run, the same ones in CI
(``CI`` set), so that a submission's run is reproducible.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, settings

from tests.support.live_node import SECRET, LiveNode, is_ready, write_keys
from tests.support.net import free_port
from tests.support.redis_servers import start_redis

#: Every robustness property: bounded in examples and time, the failing input printed.
settings.register_profile("robustness", max_examples=int(os.environ.get("RT_ROBUSTNESS_EXAMPLES", "150")),
                          derandomize=bool(os.environ.get("CI")),  # CI: the same inputs every run
                          deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("robustness")


@pytest.fixture(scope="module")
def live_node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robustness")
    redis_port = free_port()
    redis_proc = start_redis(redis_port, folder)
    rsa_key, ec_key = rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(
        ec.SECP256R1())
    jwks, pem = write_keys(folder, rsa_key, ec_key)
    port = free_port()
    (folder / "rt.toml").write_text(f"""
[server]
port = {port}
handshake_timeout_s = 2.0
[auth]
hs256_secret = "{SECRET}"
jwks_file = "{jwks}"
public_key_file = "{pem}"
[bus]
redis_url = "redis://127.0.0.1:{redis_port}/0"
[connection]
inbound_rate = 100000.0
inbound_burst = 100000
idle_timeout_s = 600.0
poll_timeout_s = 0.2
[push]
enabled = true
""")
    log_path = str(folder / "node.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "rtserver", "serve", "--config", str(folder / "rt.toml")],
                                   stdout=log, stderr=log)
    node = LiveNode(port, process, log_path, rsa_key, ec_key)
    try:
        deadline = time.monotonic() + 20
        while not is_ready(port):
            assert process.poll() is None and time.monotonic() < deadline, open(log_path).read()[-3000:]
            time.sleep(0.1)
        node.open_sentinel()
        yield node
        node.assert_serving()
    finally:
        process.kill()
        process.wait()
        redis_proc.kill()
        redis_proc.wait()

"""peerbench adapter: rtserver, embedded memory bus, one process (PEERBENCH_ADAPTERS=<this folder>).

Subscribers connect to /hub/ws with a staff token and ``sub`` to ``probe:{room}``; the
publisher POSTs ``rt.probe`` events (durable, never coalesced) to /v1/publish with a
service token. Tokens are HS256, minted here with the stdlib from the bench secret.

Each subscriber is a user of its own, as consoles connect (a token per client in
``{run_dir}/urls.txt``, peerbench's ``url_file``): its own ``user:`` room, presence and
liveness count. ``RTSERVER_BENCH_ONE_USER=1`` connects every client as the same user instead.
``RTSERVER_BENCH_ALG=RS256`` signs the subscribers' tokens with an RSA key drawn for the run
(its public key in the node's configuration) instead of HS256. ``RTSERVER_PYTHON`` is the
interpreter the node runs on (``.venv/bin/python`` by default): ``.bench-venv/bin/python``,
which ``make bench-python`` builds on a CPython with ``--enable-optimizations --with-lto`` as
the Docker image's is, measures what the image runs (bench/RESULTS.md §33, §34).
"""

import base64
import hashlib
import hmac
import json
import os
import time

NAME = "rtserver"
DESC = "rtserver (Trio), embedded memory bus, one process; json-sub over /hub/ws, HTTP publish"

PROJECT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PYTHON = os.environ.get("RTSERVER_PYTHON", os.path.join(PROJECT, ".venv", "bin", "python"))
SECRET = "peerbench-secret-not-for-production-0123456789"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({**claims, "exp": int(time.time()) + 86400}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def mint_rs256(claims: dict, key) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({**claims, "exp": int(time.time()) + 86400}).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


def staff(user: str, rsa_key=None) -> str:
    claims = {"sub": user, "healthUnitTaxId": "t1", "roles": ["attendant"]}
    return mint(claims) if rsa_key is None else mint_rs256(claims, rsa_key)


def rsa_key_for(ctx):
    """With RTSERVER_BENCH_ALG=RS256: a fresh RSA key, its public half in ``{run_dir}``."""
    if os.environ.get("RTSERVER_BENCH_ALG", "HS256") != "RS256":
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(ctx.run_dir, "bench-public.pem"), "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


TOKEN = staff("bench-sub")
SERVICE_TOKEN = mint({"sub": "bench-pub", "roles": ["service"]})
#: Subscribers of a run whose count peerbench does not say.
DEFAULT_CLIENTS = 1000


def write_user_urls(ctx, url: str, rsa_key, ports: list[int]) -> None:
    """``{run_dir}/urls.txt``: ``url`` once per subscriber, its ``{token}`` a user's own
    (all the same user with RTSERVER_BENCH_ONE_USER=1), signed with ``rsa_key`` if any, its
    ``{port}`` taken from ``ports`` in turn (the subscribers spread evenly over nodes)."""
    one_user = os.environ.get("RTSERVER_BENCH_ONE_USER") == "1"
    with open(os.path.join(ctx.run_dir, "urls.txt"), "w") as f:
        for i in range(getattr(ctx, "clients", None) or DEFAULT_CLIENTS):
            token = staff("bench-sub", rsa_key) if one_user else staff(f"bench-sub-{i}", rsa_key)
            f.write(url.format(port=ports[i % len(ports)], token=token) + "\n")


def prepare(ctx, url: str = "ws://127.0.0.1:{port}/hub/ws?access_token={token}", ports: list[int] | None = None):
    """The node's configuration and the subscribers' ``url`` (its ``{token}`` each one's;
    its ``{port}`` one of ``ports`` in turn, the node's own by default)."""
    rsa_key = rsa_key_for(ctx)
    public_key = f'public_key_file = "{os.path.join(ctx.run_dir, "bench-public.pem")}"\n' if rsa_key else ""
    with open(os.path.join(ctx.run_dir, "rtserver.toml"), "w") as f:
        f.write(f'[auth]\nhs256_secret = "{SECRET}"\n{public_key}[server]\nhost = "127.0.0.1"\nport = {ctx.port}\n')
    write_user_urls(ctx, url, rsa_key, ports or [ctx.port])


def processes(ctx):
    return [{
        "name": "server",
        "cmd": [PYTHON, "-m", "rtserver", "serve", "--config", "{run_dir}/rtserver.toml"],
        "env": {"PYTHONPATH": PROJECT},
        "wait_port": "{port}",
    }]


#: The Redis of the adapters with several nodes: run port + 2.
REDIS_URL = "redis://127.0.0.1:{port2}/0"


def nodes_on_redis(nodes: dict[str, str]) -> list[dict]:
    """A redis-server on run port + 2, and one node per name of ``nodes`` on its port."""
    redis = {"name": "redis", "role": "aux", "wait_port": "{port2}",
             "cmd": ["/usr/bin/redis-server", "--port", "{port2}", "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", "{run_dir}"]}
    cmd = [PYTHON, "-m", "rtserver", "serve", "--config", "{run_dir}/rtserver.toml", "--redis-url", REDIS_URL]
    return [redis, *({"name": name, "cmd": [*cmd, "--port", port], "wait_port": port,
                      "env": {"PYTHONPATH": PROJECT}} for name, port in nodes.items())]


SUB = {
    "url": "ws://127.0.0.1:{port}/hub/ws?access_token=" + TOKEN,
    "url_file": "{run_dir}/urls.txt",
    "proto": "json-sub",
    "sub_frame": '{"op":"sub","room":"probe:{room}","ref":1}',
    "sub_ack": '"op":"ack"',
}
PUB = {
    "method": "http",
    "url": "http://127.0.0.1:{port}/v1/publish",
    "template": '{"event":"rt.probe","tenant":"t1","rooms":["probe:{room}"],"data":%PAYLOAD%}',
    "headers": {"Authorization": "Bearer " + SERVICE_TOKEN},
}

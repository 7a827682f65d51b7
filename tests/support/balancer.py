"""nginx (Debian's) as a round-robin balancer in front of nodes, without affinity: each
request may land on any node. Its access log tells which node answered each request."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.net import free_port

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format upstreams '$request_method $request_uri $upstream_addr $status';
    access_log {dir}/access.log upstreams;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream rtserver {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://rtserver;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 120s;
            proxy_next_upstream off;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstreams(self, *where: str) -> list[str]:
        """The node (``host:port``) that answered each request whose URI holds every one of ``where``, in order."""
        lines = [line.split(" ") for line in (self.directory / "access.log").read_text().splitlines()]
        return [fields[2] for fields in lines if all(part in fields[1] for part in where)]


@contextlib.contextmanager
def round_robin(directory: Path, ports: list[int]) -> Iterator[Nginx]:
    """nginx on a free loopback port, balancing round robin over ``ports``."""
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    (directory / "nginx.conf").write_text(CONFIG.format(dir=directory, servers=servers, port=port))
    process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                "-e", str(directory / "error.log")], stderr=subprocess.PIPE)
    try:
        yield Nginx(directory, port)
    finally:
        process.terminate()
        process.wait(10)

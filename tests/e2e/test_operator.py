"""The operator's first minute: ``rtserver --version``, ``config defaults``, ``config check``
and the index page, each through the real command or a real node."""

from __future__ import annotations

import html.parser
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import httpx
import msgspec

from rtserver.backends.config import Config
from rtserver.backends.config_toml import MASK
from tests.support.net import free_port
from tests.support.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]


def rtserver(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtserver", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def keys(value: object, path: str = "") -> set[str]:
    """Every key path of a configuration, as ``section.key`` (maps of sections: their entries)."""
    if isinstance(value, msgspec.Struct):
        return {key for field in msgspec.structs.fields(value)
                for key in keys(getattr(value, field.name), f"{path}{field.name}.")} | ({path} if path else set())
    if isinstance(value, dict):
        return {key for name, entry in value.items() for key in keys(entry, f"{path}{name}.")} | {path}
    return {path}


def toml_keys(table: dict, path: str = "") -> set[str]:
    return {key for name, entry in table.items()
            for key in (toml_keys(entry, f"{path}{name}.") | {f"{path}{name}."} if isinstance(entry, dict)
                        else {f"{path}{name}."})}


def test_version_is_the_installed_package_version():
    answer = rtserver("--version")
    assert answer.returncode == 0 and answer.stdout.strip() == f"rtserver {version('rtserver')}"


def test_the_checked_in_defaults_are_what_config_defaults_prints():
    printed = rtserver("config", "defaults")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == (ROOT / "config/defaults.toml").read_text(), \
        "config/defaults.toml is stale: rtserver config defaults > config/defaults.toml"


def test_config_defaults_names_every_key_with_its_default_and_unit():
    text = (ROOT / "config/defaults.toml").read_text()
    table = tomllib.loads(text)
    assert msgspec.convert(table, Config) == Config()
    assert toml_keys(table) == keys(Config()) - {"webhooks.subscriptions."}  # a list of tables, empty
    assert "[[webhooks.subscriptions]]" in text  # ...shown commented
    lines = text.splitlines()
    assert 'keep_alive_s = 75.0  # seconds' in lines
    assert 'flush_interval_ms = 5.0  # milliseconds' in lines
    assert 'max_inbound_message_bytes = 65536  # bytes' in lines
    # Each key's comment is the one above it in the config module.
    port = lines.index("port = 8080")
    assert lines[port - 1].startswith("# TCP port")


def test_config_check_prints_the_effective_configuration_with_secrets_masked(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text('[auth]\nhs256_secret = "s3cret-hs256-value"\n'
                    '[bus]\nredis_url = "redis://app:r3dis-pass@cache:6379/2"\n'
                    '[outbox]\npostgres_dsn = "postgresql://relay:pg-pass@db:5432/app"\n'
                    '[[webhooks.subscriptions]]\nname = "partner"\nurl = "https://partner.example/hook"\n'
                    'secret = "whsec-0123456789abcdef"\n')
    answer = rtserver("config", "check", str(path), env={"RTSERVER_SERVER__PORT": "9123"})
    assert answer.returncode == 0, answer.stderr
    for secret in ("s3cret-hs256-value", "r3dis-pass", "pg-pass", "whsec-0123456789abcdef"):
        assert secret not in answer.stdout
    shown = tomllib.loads(answer.stdout)
    assert shown["server"]["port"] == 9123  # the environment is part of the effective configuration
    assert shown["auth"]["hs256_secret"] == MASK
    assert shown["bus"]["redis_url"] == f"redis://app:{MASK}@cache:6379/2"
    assert shown["outbox"]["postgres_dsn"] == f"postgresql://relay:{MASK}@db:5432/app"
    assert shown["webhooks"]["subscriptions"][0] == {
        "name": "partner", "url": "https://partner.example/hook", "secret": MASK,
        "events": ["*"], "tenants": ["*"], "max_concurrency": 4}


def test_config_check_refuses_a_bad_file_naming_the_key(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text("[server]\nprot = 8080\n")
    answer = rtserver("config", "check", str(path))
    assert answer.returncode == 1 and "prot" in answer.stderr and answer.stdout == ""
    assert rtserver("config", "check").returncode != 0
    missing = rtserver("config", "check", str(tmp_path / "absent.toml"))
    assert missing.returncode == 1 and "cannot read config" in missing.stderr


def test_config_check_loads_the_tls_files_as_serve_would(tmp_path):
    files = TlsFiles(tmp_path)
    path = tmp_path / "rt.toml"
    path.write_text(f'[server]\ntls_cert_file = "{files.cert_file}"\ntls_key_file = "{files.key_file}"\n')
    assert rtserver("config", "check", str(path)).returncode == 0
    files.key_file.write_text("not a key")
    broken = rtserver("config", "check", str(path))
    assert broken.returncode == 1 and str(files.key_file) in broken.stderr and "Traceback" not in broken.stderr
    path.write_text(f'[server]\ntls_cert_file = "{files.cert_file}"\n')
    alone = rtserver("config", "check", str(path))
    assert alone.returncode == 1 and "tls_cert_file and server.tls_key_file go together" in alone.stderr


def test_publish_to_a_node_that_does_not_answer_is_a_one_line_error():
    answer = rtserver("publish", "--url", f"http://127.0.0.1:{free_port()}", "--event", "appointment.created",
                      "--tenant", "t1", "--rooms", "tenant:t1", "--token", "any")
    assert answer.returncode == 1 and "Traceback" not in answer.stderr
    assert answer.stderr.startswith("rtserver publish: no answer from http://127.0.0.1:")


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.hrefs += [value for name, value in attrs if name == "href" and value]


async def test_the_index_page_links_to_pages_docs_metrics_and_health_that_answer(server):
    async with httpx.AsyncClient(base_url=server.http) as client:
        index = await client.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        links = _Links()
        links.feed(index.text)
        assert {"/console/", "/wall/", "/docs/protocol.md", "/metrics", "/healthz", "/readyz"} <= set(links.hrefs)
        for href in links.hrefs:
            answer = await client.get(href)
            assert answer.status_code == 200, href
        protocol = await client.get("/docs/protocol.md")
        assert protocol.headers["content-type"] == "text/plain; charset=utf-8"
        assert protocol.text == (ROOT / "docs/protocol.md").read_text()
        assert (await client.get("/docs/architecture.md")).status_code == 404
        assert (await client.get("/docs/..%2Fhttp.py")).status_code == 404

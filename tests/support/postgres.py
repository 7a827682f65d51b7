"""A throwaway PostgreSQL server for the tests and benchmarks: ``initdb`` and ``pg_ctl`` run
as the ``postgres`` user (initdb refuses to run as root) in a folder that user owns, on a
free loopback port; ``trust`` authentication; stopped and removed at the end."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.net import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("PostgreSQL is not installed (make test installs it)")
    return found[-1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


class PostgresServer:
    """One cluster; ``stop`` and ``start`` may be called again (outage tests)."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: keep fsync on (benchmarks); tests turn it off for speed."""
        self.folder = tempfile.mkdtemp(prefix="rt-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.durable = durable
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(_as_postgres(_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
                   " -c max_connections=200")
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", self.data, "-o", options, "-w", "-t", "30",
                                    "-l", os.path.join(self.folder, "log"), "start"),
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new, empty database; its DSN."""
        subprocess.run(_as_postgres(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                    name), check=True)
        return self.dsn.rpartition("/")[0] + f"/{name}"

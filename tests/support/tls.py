"""Test certificates: a CA of the test's own (trustme) and a node's certificate it signed."""

from __future__ import annotations

import datetime
import ssl
import subprocess

import trustme

from rtserver.backends.tls import client_context


class TlsFiles:
    """A test CA and the node's certificate for 127.0.0.1, as PEM files."""

    #: When the node's certificate expires.
    not_after_date = datetime.datetime(2031, 6, 1, tzinfo=datetime.UTC)
    not_after = not_after_date.timestamp()

    def __init__(self, folder, name: str = "node") -> None:
        self.ca = trustme.CA()
        self.ca_file = folder / f"{name}-ca.pem"
        self.cert_file = folder / f"{name}-cert.pem"
        self.key_file = folder / f"{name}-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        issued = self.ca.issue_cert("127.0.0.1", "localhost", not_after=self.not_after_date)
        issued.cert_chain_pems[0].write_to_path(str(self.cert_file))
        for pem in issued.cert_chain_pems[1:]:
            pem.write_to_path(str(self.cert_file), append=True)
        issued.private_key_pem.write_to_path(str(self.key_file))

    def client_context(self) -> ssl.SSLContext:
        return client_context(str(self.ca_file))

    def server_section(self, **more) -> dict:
        return {"tls_cert_file": str(self.cert_file), "tls_key_file": str(self.key_file), **more}

    def trusted_by_chromium(self, home) -> dict[str, str]:
        """An NSS database under ``home`` trusting this CA (where Chromium on Linux looks
        for the user's CAs): the environment to start Chromium with."""
        nssdb = home / ".pki" / "nssdb"
        nssdb.mkdir(parents=True, exist_ok=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True)
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "rtserver-test-ca",
                        "-i", str(self.ca_file)], check=True)
        return {"HOME": str(home)}

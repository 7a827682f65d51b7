"""rtserver: a realtime gateway on Trio (server, transports, HTTP app, bus, CLI)."""

__version__ = "0.1.0"

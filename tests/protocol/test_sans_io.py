"""protocol/ is sans-IO: it imports no trio and no I/O library (see protocol/__init__.py)."""

import ast
import pathlib
import subprocess
import sys

PROTOCOL = pathlib.Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN = {"trio", "trio_websocket", "asyncio", "socket", "selectors", "hypercorn", "quart",
             "quart_trio", "redis", "asyncpg", "httpx", "anyio"}


def test_protocol_modules_import_no_io_library():
    offenders = []
    for path in PROTOCOL.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [(path.name, n) for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_protocol_does_not_load_trio():
    code = (
        "import sys, pkgutil, importlib, protocol\n"
        "for m in pkgutil.iter_modules(protocol.__path__): importlib.import_module('protocol.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in %r))" % FORBIDDEN
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PROTOCOL.parent)
    assert out.stdout.strip() == "[]"

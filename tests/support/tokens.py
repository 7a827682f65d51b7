"""Tokens no key signed."""

from __future__ import annotations

import base64
import json
import time


def unsigned_token(claims) -> str:
    """A token of ``claims`` with ``alg: none`` and no signature (every verifier must refuse it)."""
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({**claims, 'exp': int(time.time()) + 60})}."

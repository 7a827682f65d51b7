"""Screenshots of the attendant console and the schedule wall for docs/ (``make screenshots``).

Runs ``rtserver demo`` (embedded node, demo traffic) on a free port, opens both pages in
Debian's Chromium (Playwright, ``executable_path``), lets the traffic run, and writes
``docs/console.png`` and ``docs/wall.png``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from playwright.sync_api import sync_playwright

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from rtserver.backends.config import load_config  # noqa: E402
from tests.support.net import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: What each page shows before its shot (the demo's traffic brings it within a minute).
READY = {
    "console": "document.querySelectorAll('#messages li').length >= 2 && document.getElementById('typing').textContent",
    "wall": "document.getElementById('digest').textContent",
}
VIEWPORT = {"width": 1280, "height": 440}


def main() -> None:
    secret = load_config(os.path.join(ROOT, "config", "rtserver.toml")).auth.hs256_secret
    with tempfile.TemporaryDirectory() as folder:
        config = os.path.join(folder, "rtserver.toml")
        with open(config, "w") as f:  # no allowed_origins: the pages are same-origin
            f.write(f'[server]\nhost = "127.0.0.1"\n[auth]\nhs256_secret = "{secret}"\n')
        demo = subprocess.Popen([sys.executable, "-m", "rtserver", "demo", "--config", config,
                                 "--port", str(free_port())], stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            urls = {}
            while len(urls) < 2:
                line = demo.stderr.readline()
                if not line:
                    raise SystemExit("rtserver demo stopped before printing the page URLs")
                if match := re.match(r"\s+(console|wall):\s+(\S+)", line):
                    urls[match[1]] = match[2]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                for name, url in urls.items():
                    page = browser.new_page(viewport=VIEWPORT)
                    page.goto(url)
                    page.wait_for_function(READY[name], polling=100, timeout=120_000)
                    path = os.path.join(ROOT, "docs", f"{name}.png")
                    page.screenshot(path=path)
                    print(f"wrote {os.path.relpath(path, ROOT)}")
                browser.close()
        finally:
            demo.terminate()
            demo.wait(10)


if __name__ == "__main__":
    main()

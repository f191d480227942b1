"""Take ``docs/web.png``: the live page during a run, in headless Chromium.

The page is served in-process on a free loopback port with an ephemeral Prefect API; the run
uses the offline ``random`` provider slowed to ``--latency`` seconds per answer, so the chart
shows the new-attribute rate falling as its small vocabulary fills up.

    python docs/web_screenshot.py [--seconds 25] [--out docs/web.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="web-screenshot-"))
os.environ.pop("PREFECT_API_URL", None)

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="run time before the shot")
    parser.add_argument("--latency", type=float, default=0.4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web.png")
    args = parser.parse_args()
    args.out = args.out.resolve()

    import httpx
    from playwright.sync_api import expect, sync_playwright

    import flows.explore as explore
    from web.server import BackgroundServer

    real = explore.provider_from_env

    def with_latency(kind: str, **kw: Any) -> Any:
        kw["options"] = {**(kw.get("options") or {}), "latency": args.latency}
        return real(kind, **kw)

    explore.provider_from_env = with_latency
    tmp = tempfile.mkdtemp(prefix="web-screenshot-")
    os.chdir(tmp)  # the page shows the output folder as ./output/<topic-slug>
    with (
        BackgroundServer(output_root="output") as server,
        sync_playwright() as playwright,
    ):
        deadline = time.monotonic() + 180
        while not httpx.get(server.url + "/api/state").json()["prefect"]["ready"]:
            if time.monotonic() > deadline:
                raise SystemExit("Prefect's ephemeral API did not start")
            time.sleep(0.5)
        browser = playwright.chromium.launch_persistent_context(
            str(Path(tmp) / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#connection")).to_have_text("live", timeout=30_000)
        page.fill("#topic", "Paris attractions")
        page.fill("#producers", "5")
        page.fill("#routing_config", "random:random")
        page.click("#start")
        expect(page.locator("#run-status")).to_have_text("running", timeout=60_000)
        time.sleep(args.seconds)
        page.locator("#message").evaluate("el => { el.hidden = true; }")
        page.screenshot(path=str(args.out), full_page=True)
        print(f"wrote {args.out}")
        httpx.post(server.url + "/api/stop", json={})
        browser.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

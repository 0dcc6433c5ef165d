"""Refresh every picture in the docs from a directory where `kwx demo` ran (default: the current one).

    python docs/refresh_screenshots.py [DEMO_DIR] [--timezone Asia/Tokyo]

Starts the demo's dashboards and `mlflow ui` on free loopback ports, photographs them in headless Chromium (Debian's
package, no browser download) with the browser in ``--timezone`` (not the city's: the page must show the city's clock
whatever the browser's), copies the acceptance report's reliability diagram, and stops what it started:

- docs/dashboard.png: the replayed paper day 2025-09-15 (README's picture);
- docs/dashboard-season.png: the simulated season's workspace, whole page;
- docs/mlflow-compare.png: MLflow's compare view of the demo training run's windows;
- docs/reliability-diagram.png: the model and the market against the outcomes, all test weeks pooled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RT_CONFIG = DOCS.parent / "configs" / "rt.yaml"
PAPER_DAY = "2025-09-15"  # the demo's replayed paper day


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serving(command: list[str], cwd: Path, port: int, timeout: float = 60):
    """``command`` running until the block ends, once it answers on ``port``."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{command[0]} did not answer on port {port}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _training_runs(tracking_uri: str) -> tuple[str, list[str]]:
    """The experiment id and window run ids of the demo's newest training run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`kwx.kind` = 'train'", order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit(f"no kwx training run in {tracking_uri}: run `kwx demo` there first")
    parent = parents[0]
    windows = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                 order_by=["attributes.start_time ASC"])
    return parent.info.experiment_id, [w.info.run_id for w in windows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", nargs="?", default=".", type=Path)
    parser.add_argument("--timezone", default="Asia/Tokyo", help="the browser's IANA time zone")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    demo = args.demo_dir.resolve()
    reports = sorted(demo.glob("acceptance_reports/chicago_between/*/03_reliability_diagram.png"),
                     key=lambda p: p.stat().st_mtime)
    if not (demo / "kwx.db").exists() or not reports:
        raise SystemExit(f"{demo} holds no `kwx demo` output (kwx.db, acceptance_reports/)")
    experiment, windows = _training_runs(f"sqlite:///{demo / 'mlflow.db'}")
    ports = [_free_port() for _ in range(3)]
    kwx = str(BIN / "kwx")
    with ExitStack() as stack, sync_playwright() as playwright:
        day = stack.enter_context(_serving([kwx, "dashboard", "--config", str(RT_CONFIG), "--port", str(ports[0]),
                                            "--db-url", "sqlite:///kwx.db"], demo, ports[0]))
        season = stack.enter_context(_serving(
            [kwx, "dashboard", "--config", str(RT_CONFIG), "--port", str(ports[1]), "--db-url",
             "sqlite:///simulations/demo/kwx.db", "--tracking-uri", "sqlite:///simulations/demo/mlflow.db"],
            demo, ports[1]))
        mlflow = stack.enter_context(_serving([str(BIN / "mlflow"), "ui", "--backend-store-uri", "sqlite:///mlflow.db",
                                               "--host", "127.0.0.1", "--port", str(ports[2])], demo, ports[2], 120))
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, timezone_id=args.timezone)
        for url, output, full in ((f"{day}#day={PAPER_DAY}", "dashboard.png", False),
                                  (season, "dashboard-season.png", True)):
            page.goto(url)
            page.wait_for_function("window.kwx && window.kwx.refreshCount >= 1", timeout=30_000)
            page.wait_for_timeout(300)  # the charts' first frame
            page.screenshot(path=str(DOCS / output), full_page=full)
            print(f"wrote docs/{output}")
        page.goto(f"{mlflow}#/compare-runs?runs={quote(json.dumps(windows))}&experiments="
                  f"{quote(json.dumps([experiment]))}")
        # the UI polls for ever (never network-idle): wait for the view's title, then for its charts to draw
        page.wait_for_selector("text=Comparing", timeout=60_000)
        assistant = page.locator("text=MLflow Assistant")  # MLflow 3.17's side panel: closed, the view gets the room
        if assistant.count():
            assistant.locator("xpath=ancestor::*[.//button][1]").locator("button").last.click()
        page.wait_for_timeout(3_000)
        page.screenshot(path=str(DOCS / "mlflow-compare.png"))
        print(f"wrote docs/mlflow-compare.png ({len(windows)} window runs)")
        browser.close()
    shutil.copyfile(reports[-1], DOCS / "reliability-diagram.png")
    print(f"wrote docs/reliability-diagram.png (from {reports[-1].relative_to(demo)})")


if __name__ == "__main__":
    main()

"""Screenshots of a running `kwx dashboard` for README and the docs: headless Chromium (Debian's package), Playwright.

    python docs/screenshots.py http://127.0.0.1:8050/ docs/dashboard.png [--full-page] [--width 1400 --height 1000]
"""

from __future__ import annotations

import argparse

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("output")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not only the viewport")
    parser.add_argument("--timezone", default=None, help="the browser's IANA time zone, e.g. Asia/Tokyo")
    parser.add_argument("--hash", default="", help="the page's selection, e.g. city=chicago&day=2025-07-18")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height}, timezone_id=args.timezone)
        page.goto(f"{args.url}#{args.hash}" if args.hash else args.url)
        page.wait_for_function("window.kwx && window.kwx.refreshCount >= 1", timeout=30_000)
        page.wait_for_timeout(300)  # the charts' first frame
        page.screenshot(path=args.output, full_page=args.full_page)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Look at the built documentation as a reader would: one headless-Chromium screenshot per page.

    AIOEXEC_DOCS_SITE=/tmp/site bash .ci/docs.sh .venv/bin/python
    python .ci/docs_screenshots.py /tmp/site /tmp/shots [--height 1600] [--only api,faq]

Serves the site on 127.0.0.1 (a free port) from this process, renders each page with Debian's
``chromium`` (``apt-get install chromium``), and writes ``<page>.png`` into the output
directory. Chromium may resolve no host name but 127.0.0.1, so a page that tries to load
anything from elsewhere shows it as a hole in the picture, and in the list this script prints
of every URL a page asked for that is not the local server (from Chromium's net log).

Not part of CI (it needs Chromium); a tool for whoever changes the look of the docs.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--hide-scrollbars",
    # Nothing but loopback resolves: a remote resource cannot load, and shows as missing.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def _quiet_handler(site: Path) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    return functools.partial(Handler, directory=str(site))  # type: ignore[return-value]


def _remote_urls(net_log: Path, origin: str) -> set[str]:
    """The http(s) URLs that the *page* asked for, in a Chromium net log, outside ``origin``.

    A page's own requests carry an initiator (its origin); the browser's background
    requests (update checks, sign-in, autofill) carry "not an origin". Those are refused by
    the resolver rule above anyway, and are not the site's doing.
    """
    try:
        text = net_log.read_text(encoding="utf-8", errors="replace")
        try:
            log = json.loads(text)
        except json.JSONDecodeError:  # cut short at exit: close the event list ourselves
            log = json.loads(text.rstrip().rstrip(",") + "]}")
    except (OSError, json.JSONDecodeError) as error:
        return {f"(net log unreadable: {error})"}
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls: set[str] = set()
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] != start_job or params.get("initiator") in (None, "not an origin"):
            continue
        url = params.get("url", "")
        if url.startswith(("http://", "https://")) and not url.startswith(origin):
            urls.add(url)
    return urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="a built site (mkdocs build --site-dir)")
    parser.add_argument("out", type=Path, help="where the PNGs go")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--only", default="", help="comma-separated page names, e.g. api,faq")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per page")
    args = parser.parse_args()

    pages = sorted(p for p in args.site.rglob("*.html") if p.name != "404.html")
    if args.only:
        wanted = set(args.only.split(","))
        pages = [p for p in pages if p.stem in wanted]
    if not pages:
        print(f"no pages found under {args.site}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(args.site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    remote: dict[str, set[str]] = {}
    failed = 0
    try:
        for page in pages:
            rel = page.relative_to(args.site).as_posix()
            png = args.out / (rel[: -len(".html")].replace("/", "--") + ".png")
            with tempfile.TemporaryDirectory(prefix="aioexec-chromium-") as profile:
                net_log = Path(profile) / "net-log.json"
                command = [
                    args.chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--log-net-log={net_log}",
                    f"--window-size={args.width},{args.height}",
                    f"--screenshot={png}",
                    origin + rel,
                ]
                try:
                    done = subprocess.run(
                        command, capture_output=True, text=True, timeout=args.timeout
                    )
                except subprocess.TimeoutExpired:
                    print(f"{rel}: chromium timed out", file=sys.stderr)
                    failed += 1
                    continue
                if done.returncode != 0 or not png.exists():
                    print(f"{rel}: chromium failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    failed += 1
                    continue
                urls = _remote_urls(net_log, origin)
                if urls:
                    remote[rel] = urls
            print(png)
    finally:
        server.shutdown()
        server.server_close()

    for rel, urls in remote.items():
        print(f"{rel} asked for remote URLs:", *sorted(urls), sep="\n  ", file=sys.stderr)
    return 1 if failed or remote else 0


if __name__ == "__main__":
    sys.exit(main())

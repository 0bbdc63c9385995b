"""A web crawler: aiohttp fetches pages in this process, child processes parse them.

Run it with ``python examples/crawler.py`` (needs ``pip install -e '.[examples]'``; a few
seconds; no network: the site it crawls is served on 127.0.0.1 by this same script).

What it shows:

* the usual split of a crawler: the event loop does the I/O (many requests in flight over
  one ``aiohttp.ClientSession``), while the CPU-heavy part, parsing each page, runs in
  child processes with ``await ex.run(parse_page, html)``, so parsing never blocks the loop
  and spreads over the cores;
* ``parse_page`` is a plain function: the executor's own API (``ex.run``, ``ex.submit``,
  ``ex.map``, ``ex.amap``) and ``loop.run_in_executor(ex, ...)`` with an explicit executor
  always send it to a child;
* the executor is an ``async with`` block: leaving it waits for the children to exit
  without blocking the event loop;
* for comparison, the same crawl with each page parsed in this process: how long each takes,
  and how long the event loop was stalled at worst (a stalled loop delays every other
  request, timer and answer in the process; here it also serves the site).

The site is generated: ``PAGES`` linked pages of pseudo-random words (the same words on
every run), plus one link to a page that does not exist. The crawl starts at ``/page/0``
and follows every link, so the summary it prints is the same on every run.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web

from aioexec import AsyncProcessExecutor

PAGES = 150  # pages on the generated site
WORDS_PER_PAGE = 8000
FETCHERS = 16  # requests in flight at once
WORKERS = min(4, os.cpu_count() or 1)
VOCABULARY = [a + b + c for a in ("ka", "lo", "mi", "su", "te") for b in "aeiou" for c in "nrst"]
VOCABULARY_SET = frozenset(VOCABULARY)
MISSING = "/page/missing"  # the one broken link on the site


# ------------------------------------------------------------------- the site (server side)


def render_page(number: int) -> str:
    """Page ``number`` of the site: a title, paragraphs of words, links to other pages."""
    rng = random.Random(number)  # the same page on every run
    links = sorted({(number + 1) % PAGES, (number * 7 + 3) % PAGES, rng.randrange(PAGES)})
    hrefs = [f"/page/{n}" for n in links]
    if number == PAGES // 2:
        hrefs.append(MISSING)
    words = rng.choices(VOCABULARY, k=WORDS_PER_PAGE)
    paragraphs = "\n".join(
        f"<p>{' '.join(words[i : i + 50])}</p>" for i in range(0, len(words), 50)
    )
    nav = "".join(f'<li><a href="{href}">{href}</a></li>' for href in hrefs)
    return (
        f"<!doctype html><html><head><title>Page {number}</title></head><body>"
        f"<h1>Page {number}</h1><nav><ul>{nav}</ul></nav>{paragraphs}</body></html>"
    )


async def serve_page(request: web.Request) -> web.Response:
    try:
        number = int(request.match_info["number"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 0 <= number < PAGES:
        raise web.HTTPNotFound()
    return web.Response(text=render_page(number), content_type="text/html")


async def start_site() -> tuple[web.AppRunner, str]:
    """Serve the site on 127.0.0.1 at a port the system picks; return its base URL."""
    app = web.Application()
    app.router.add_get("/page/{number}", serve_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


# ------------------------------------------------------------------- parsing (in children)


@dataclass
class PageInfo:
    """What a child sends back for one page (it is pickled on the way)."""

    title: str
    links: list[str]
    words: Counter[str]
    fingerprint: str  # a digest of the page's word 3-shingles, to spot duplicate content
    pid: int  # the child that parsed it


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        else:
            self.text.append(data)


def parse_page(html: str) -> PageInfo:
    """The CPU-heavy part of the crawl: runs in a child process.

    A plain function at module level, so the child can import it by name.
    """
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    words = " ".join(parser.text).split()
    shingles = hashlib.sha256()
    for i in range(len(words) - 2):
        shingles.update(hashlib.blake2b(" ".join(words[i : i + 3]).encode()).digest())
    return PageInfo(
        title=parser.title,
        links=parser.links,
        words=Counter(w for w in words if w in VOCABULARY_SET),
        fingerprint=shingles.hexdigest()[:12],
        pid=os.getpid(),
    )


# ------------------------------------------------------------------- the crawler (parent)


@dataclass
class CrawlResult:
    pages: dict[str, PageInfo]
    broken: list[str]

    def fingerprints(self) -> dict[str, str]:
        return {url: info.fingerprint for url, info in self.pages.items()}


async def crawl(base: str, parse: Callable[[str], Awaitable[PageInfo]]) -> CrawlResult:
    """Fetch every page reachable from ``/page/0``; ``await parse(html)`` each one."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen = {urljoin(base, "/page/0")}
    queue.put_nowait(urljoin(base, "/page/0"))
    result = CrawlResult(pages={}, broken=[])

    async def fetcher(session: aiohttp.ClientSession) -> None:
        while True:
            url = await queue.get()
            try:
                async with session.get(url) as response:
                    if response.status != 200:
                        result.broken.append(urlsplit(url).path)
                        continue
                    html = await response.text()
                info = await parse(html)
                result.pages[url] = info
                for link in info.links:
                    absolute = urljoin(url, link)
                    if absolute.startswith(base) and absolute not in seen:
                        seen.add(absolute)
                        queue.put_nowait(absolute)
            finally:
                queue.task_done()

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(fetcher(session)) for _ in range(FETCHERS)]
        # Every page is fetched once the queue is empty and no fetcher holds a page (a page
        # being parsed may still add links, which is why join() and not an empty() check).
        # A fetcher that fails ends the crawl with its exception instead of a hang.
        join = asyncio.create_task(queue.join())
        await asyncio.wait([join, *workers], return_when=asyncio.FIRST_COMPLETED)
        join.cancel()
        for task in workers:
            task.cancel()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
    errors = [e for e in outcomes if isinstance(e, Exception)]  # not the CancelledErrors
    if errors:
        raise errors[0]
    return result


async def parse_here(html: str) -> PageInfo:
    """For comparison: parse in this process, which blocks the event loop meanwhile."""
    return parse_page(html)


class LoopLag:
    """The longest time the event loop was kept from running a ready task, while active."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - before - 0.005)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def main() -> None:
    runner, base = await start_site()
    print(f"serving a generated site of {PAGES} pages on {base}")
    try:
        print(f"crawling it twice, {FETCHERS} fetches in flight:")
        with LoopLag() as lag:
            start = time.perf_counter()
            parsed_here = await crawl(base, parse_here)
            here = time.perf_counter() - start
        print(
            f"  parsing in this process:    {here:5.2f} s, event loop stalled up to "
            f"{lag.worst * 1000:4.0f} ms"
        )
        async with AsyncProcessExecutor(WORKERS) as ex:
            # Start-up is not part of the comparison: one call per child starts them all.
            await asyncio.gather(*(ex.run(os.getpid) for _ in range(WORKERS)))
            with LoopLag() as lag:
                start = time.perf_counter()
                # ex.run(parse_page, html): parsed in a child process, awaited in this loop
                result = await crawl(base, functools.partial(ex.run, parse_page))
                elapsed = time.perf_counter() - start
            print(
                f"  parsing in child processes: {elapsed:5.2f} s, event loop stalled up to "
                f"{lag.worst * 1000:4.0f} ms  (await ex.run(parse_page, html))"
            )
    finally:
        await runner.cleanup()

    if parsed_here.fingerprints() != result.fingerprints():
        raise SystemExit("crawler: the two crawls parsed different pages")
    total = Counter[str]()
    for info in result.pages.values():
        total.update(info.words)
    links = sum(len(info.links) for info in result.pages.values())
    per_child = Counter(info.pid for info in result.pages.values())
    print(f"crawled {len(result.pages)} pages, the same in both crawls")
    print(f"  links followed: {links}; broken: {', '.join(sorted(result.broken)) or 'none'}")
    print(f"  words: {sum(total.values())}, distinct: {len(total)}")
    print(f"  most common: {', '.join(f'{w} ({n})' for w, n in total.most_common(3))}")
    print(f"  distinct page fingerprints: {len(set(result.fingerprints().values()))}")
    print(f"  pages parsed per child process: {sorted(per_child.values(), reverse=True)}")
    if len(result.pages) != PAGES or result.broken != [MISSING]:
        raise SystemExit("crawler: the crawl missed pages")
    print("crawler: OK")


if __name__ == "__main__":  # required: the children import this module
    asyncio.run(main())

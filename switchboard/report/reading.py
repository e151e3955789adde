"""Reading the call store for the report: `--since`, the turns and shadow results a page at a time with
progress on stderr, and the prices from pipeline.yaml."""

from __future__ import annotations

import asyncio
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from switchboard.report.rows import Pricing, pricing_from_config

PAGE_SIZE = 5000  # rows per query when reading the store
PROGRESS_MIN_ROWS = 20_000  # show progress on a non-terminal stderr only for reads bigger than this
PROGRESS_INTERVAL_S = 0.5
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'24h', '7d', '30m', '2w', '90s' (before now) or an ISO date/time (naive = UTC) -> UTC datetime."""
    now = now or datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since: expected a duration like 24h, 7d, 30m or an ISO date like 2025-01-31, "
                         f"got {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class Progress:
    """Reports how far a long read is, on stderr: "reading turns: 45,000 / 120,000".

    Shown on a terminal for reads of more than one page (one line, rewritten in place), elsewhere (a log
    file, CI) for reads of more than PROGRESS_MIN_ROWS rows (a line each time); at most every
    PROGRESS_INTERVAL_S, and always the last. Never written to stdout, which may carry --json."""

    def __init__(self, stream: TextIO | None = None, *, min_rows: int | None = None,
                 interval_s: float | None = None) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.min_rows = min_rows
        self.interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
        self._last = -math.inf

    def __call__(self, what: str, done: int, total: int) -> None:
        threshold = self.min_rows
        if threshold is None:
            threshold = PAGE_SIZE if self.tty else PROGRESS_MIN_ROWS
        if total <= threshold:
            return
        final = done >= total
        now = time.monotonic()
        if not final and now - self._last < self.interval_s:
            return
        self._last = now
        text = f"reading {what}: {done:,} / {total:,}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


ProgressCallback = Callable[[str, int, int], None]  # (what, rows read, rows in all)


async def _read_paged(query: Any, count: Any, what: str, page_size: int,
                      progress: ProgressCallback | None) -> list[dict[str, Any]]:
    """Every row of a CallStore query, `page_size` at a time (keyset on id), reporting progress."""
    total = await count()
    rows: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        page = await query(after_id=after, limit=page_size)
        rows += page
        last = len(page) < page_size
        if progress is not None and (last or len(rows) < total):  # done == total only once: at the end
            progress(what, len(rows), len(rows) if last else total)
        if last:
            return rows
        after = page[-1]["id"]


async def load(
    db: str | None = None,
    since: datetime | None = None,
    pipeline: str | None = None,
    variant: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    page_size: int | None = None,
    evals: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns, shadow results), oldest first, from the store at `db` (a URL or an SQLite path; None:
    switchboard.db). Read `page_size` (PAGE_SIZE) rows per query; `progress(what, done, total)` after each.
    The calls `switchboard eval` placed are left out unless `evals`.

    Raises FileNotFoundError for an SQLite file that does not exist (rather than creating one)."""
    from functools import partial

    from sqlalchemy.engine import make_url

    from switchboard.store import CallStore

    store = CallStore(db)
    url = make_url(store.url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if sqlite_file and not await asyncio.to_thread(Path(sqlite_file).exists):
        raise FileNotFoundError(f"no call store at {sqlite_file}")
    size = page_size or PAGE_SIZE
    await store.open()
    try:
        filters = (since, pipeline, variant)
        turns = await _read_paged(partial(store.query_turns, *filters, evals=evals),
                                  partial(store.count_turns, *filters, evals=evals), "turns", size, progress)
        shadows = await _read_paged(partial(store.query_shadows, *filters, evals=evals),
                                    partial(store.count_shadows, *filters, evals=evals), "shadow results",
                                    size, progress)
    finally:
        await store.close()
    oldest_first = lambda row: (row["created_at"], row["id"])  # noqa: E731
    return sorted(turns, key=oldest_first), sorted(shadows, key=oldest_first)


def load_pricing(path: str | Path | None = None, err: TextIO | None = None) -> Pricing:
    """`pricing:` of pipeline.yaml at `path` (default: as `serve` finds it). A missing file is a warning on
    `err` (stderr): the report goes on without prices. A file that is there but broken is an error
    (ConfigError, exit 2): its prices would silently be lost otherwise."""
    from switchboard.config import ConfigError, default_config_path, load_config

    source = path or default_config_path()
    try:
        config = load_config(source)
    except ConfigError as exc:
        if Path(source).is_file():
            raise
        print(f"switchboard report: warning: {source} does not load, so costs are not estimated:\n{exc}",
              file=err or sys.stderr)
        return {}
    return pricing_from_config(config)

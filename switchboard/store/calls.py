"""`CallStore`: calls and their turns in SQLite (default, WAL) or PostgreSQL, through SQLAlchemy async.

Every method is one short transaction, committed before it returns: a crash loses nothing written.
Times are stored as UTC wall time and come back as timezone-aware UTC datetimes.
Servers write through `store.writer.StoreWriter`, never by awaiting these methods on the audio path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Integer, cast, event, func, insert, literal, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from switchboard.core.metrics import TurnMetrics
from switchboard.store import schema

if TYPE_CHECKING:
    from switchboard.core.metrics import ShadowResult

log = logging.getLogger("switchboard.store")

DEFAULT_URL = "sqlite+aiosqlite:///switchboard.db"
# A call with nothing written for this long, on a database several processes share, was lost in a crash:
# a live call writes a turn every few seconds to minutes (an idle caller is hung up on after 5 minutes).
LOST_AFTER = timedelta(minutes=15)
_PG_LOCK_ID = 0x5357_4244  # pg_advisory_xact_lock key: one server process upgrades the schema at a time


def normalize_url(url: str | None) -> str:
    """A database URL with an async driver: None -> switchboard.db, a bare path -> SQLite at that path,
    `sqlite://…` -> aiosqlite, `postgresql://…` / `postgres://…` -> asyncpg."""
    if not url:
        return DEFAULT_URL
    if "://" not in url:
        return f"sqlite+aiosqlite:///{url}"
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
              "postgres": "postgresql+asyncpg"}
    if parsed.drivername in driver:
        parsed = parsed.set(drivername=driver[parsed.drivername])
    return parsed.render_as_string(hide_password=False)


def _utc(value: datetime | None) -> datetime | None:
    """UTC-aware: what SQLite hands back naive is UTC by construction."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def turn_row(metrics: TurnMetrics, created_at: datetime | None = None) -> dict[str, Any]:
    """The `turns` row of one finished turn: TurnMetrics.summary() plus vendor/model per stage."""
    summary = metrics.summary()
    row = {column.name: summary.get(column.name) for column in schema.turns.columns}
    del row["id"]
    row.update(
        failures=list(metrics.failures),
        hedges=list(metrics.hedges) or None,
        stt_vendor=metrics.vendors.get("stt"),
        llm_vendor=metrics.vendors.get("llm"),
        tts_vendor=metrics.vendors.get("tts"),
        created_at=_utc(created_at or datetime.now(UTC)),
    )
    return row


class CallStore:
    """Calls, turns and shadow results in one database. `await open()` before use, `await close()` after."""

    def __init__(self, url: str | None = None, migrations: Sequence[schema.Migration] | None = None) -> None:
        self.url = normalize_url(url)
        self.migrations = schema.MIGRATIONS if migrations is None else list(migrations)
        self.engine: AsyncEngine | None = None
        self.version: int | None = None

    @property
    def is_open(self) -> bool:
        return self.engine is not None

    @property
    def _engine(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("CallStore is not open: await store.open() first")
        return self.engine

    async def open(self) -> None:
        """Connect, and create or upgrade the schema. Idempotent; raises if the database is unusable."""
        if self.engine is not None:
            return
        engine = create_async_engine(self.url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            async with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_ID})")
                self.version = await connection.run_sync(schema.upgrade, self.migrations)
        except BaseException:
            await engine.dispose()
            raise
        self.engine = engine
        log.info("call store open: %s (schema version %d)", make_url(self.url).render_as_string(),
                 self.version)

    async def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.dispose()

    async def start_call(
        self,
        call_id: str,
        pipeline: str,
        *,
        started_at: datetime | None = None,
        from_number: str = "",
        to_number: str = "",
        carrier: str = "",
        variant: str | None = None,
        eval_tags: dict[str, str] | None = None,
        config_version: tuple[str, str] | None = None,
    ) -> None:
        """Record a call that has just started (UTC wall time now unless `started_at` is given).
        `eval_tags`: `eval_run` and `eval_scenario` of a call `switchboard eval` placed."""
        tags = {key: str(value)[:column.type.length]
                for key, value in (eval_tags or {}).items()
                if (column := schema.calls.c.get(key)) is not None and key.startswith("eval_") and value}
        async with self._engine.begin() as connection:
            await connection.execute(insert(schema.calls).values(
                id=call_id, pipeline=pipeline, started_at=_utc(started_at or datetime.now(UTC)),
                from_number=from_number, to_number=to_number, carrier=carrier, variant=variant, **tags,
                config_version=config_version[0] if config_version else None,
                config_file=config_version[1] if config_version else None,
            ))

    async def add_turn(self, metrics: TurnMetrics, *, created_at: datetime | None = None) -> None:
        """Record one finished turn of call `metrics.call_id`."""
        async with self._engine.begin() as connection:
            await connection.execute(insert(schema.turns).values(turn_row(metrics, created_at)))

    async def add_shadow(self, result: ShadowResult, *, created_at: datetime | None = None) -> None:
        """Record what a shadow LLM answered to turn `result.turn_index` of call `result.call_id`."""
        row = {column.name: getattr(result, column.name, None) for column in schema.shadow_results.columns
               if column.name not in ("id", "created_at")}
        row["text"] = row["text"] or ""
        async with self._engine.begin() as connection:
            await connection.execute(insert(schema.shadow_results).values(
                **row, created_at=_utc(created_at or datetime.now(UTC))))

    async def end_call(
        self,
        call_id: str,
        summary: dict[str, Any],
        *,
        recording: str | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        """Record the end of a call: its summary and recording path (default: summary["recording"])."""
        recording = recording if recording is not None else summary.get("recording")
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(schema.calls).where(schema.calls.c.id == call_id).values(
                    ended_at=_utc(ended_at or datetime.now(UTC)), summary=summary,
                    recording=None if recording is None else str(recording),
                ))
        if result.rowcount == 0:
            log.warning("call store: end of call %s not recorded: its start was never recorded", call_id)

    async def close_lost_calls(self, quiet_for: timedelta | None = None) -> list[str]:
        """Close the calls a crash left open (no `ended_at`) as `lost`, ended at their last known moment
        (the last turn written, else the start), with what their turns tell. Returns their ids.

        `quiet_for`: only calls with nothing written for that long, so that on a database several
        server processes share, another process's live calls are left alone. None picks the rule by
        database: SQLite has one server process, so every open call is lost; PostgreSQL waits
        `LOST_AFTER`. A call closed here that was in fact alive is set right when it ends."""
        if quiet_for is None:
            quiet_for = timedelta(0) if self._engine.dialect.name == "sqlite" else LOST_AFTER
        cutoff = datetime.now(UTC) - quiet_for
        calls, turns = schema.calls, schema.turns
        per_call = (select(turns.c.call_id, func.max(turns.c.created_at).label("last_turn"),
                           func.count().label("turns"),
                           func.sum(cast(turns.c.interrupted, Integer)).label("interrupted"),
                           func.count(turns.c.error).label("errors"))
                    .group_by(turns.c.call_id).subquery())
        query = (select(calls.c.id, calls.c.started_at, per_call.c.last_turn, per_call.c.turns,
                        per_call.c.interrupted, per_call.c.errors)
                 .outerjoin(per_call, per_call.c.call_id == calls.c.id)
                 .where(calls.c.ended_at.is_(None)))
        closed = []
        async with self._engine.begin() as connection:
            for row in (await connection.execute(query)).mappings():
                last = _utc(row["last_turn"]) or _utc(row["started_at"])
                if last is None or last > cutoff:
                    continue
                summary = {"outcome": "lost", "turns": row["turns"] or 0,
                           "interrupted": row["interrupted"] or 0, "errors": row["errors"] or 0,
                           "note": "the server stopped during the call; ended at its last recorded turn"}
                still_open = (calls.c.id == row["id"]) & calls.c.ended_at.is_(None)
                await connection.execute(
                    update(calls).where(still_open).values(ended_at=last, summary=summary))
                closed.append(row["id"])
        if closed:
            log.warning("call store: %d call(s) left open by an earlier server stop closed as lost: %s",
                        len(closed), ", ".join(closed[:20]) + (" ..." if len(closed) > 20 else ""))
        return closed

    async def query_calls(self, since: datetime | None = None, pipeline: str | None = None,
                          variant: str | None = None) -> list[dict[str, Any]]:
        """Calls started at or after `since`, oldest first."""
        c = schema.calls.c
        query = select(schema.calls).order_by(c.started_at, c.id)
        if since is not None:
            query = query.where(c.started_at >= _utc(since))
        if pipeline is not None:
            query = query.where(c.pipeline == pipeline)
        if variant is not None:
            query = query.where(_is_variant(c.variant, variant))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [{**row, "started_at": _utc(row["started_at"]), "ended_at": _utc(row["ended_at"])}
                for row in rows]

    async def query_turns(self, since: datetime | None = None, pipeline: str | None = None,
                          variant: str | None = None, *, after_id: int | None = None,
                          limit: int | None = None, evals: bool | str = False) -> list[dict[str, Any]]:
        """Turns finished at or after `since`, oldest first, each with its call's pipeline, variant and
        carrier (None if the call's row is missing). Filtering by pipeline or variant needs that row.
        Calls `switchboard eval` placed are left out (`evals=True`: kept; a run's id: only that run's).

        Paged (keyset): with `limit`, at most that many turns whose id is above `after_id`, in id order;
        pass the last one's id as `after_id` for the next page."""
        return await self._query_joined(schema.turns, since, pipeline, variant, after_id, limit, evals)

    async def query_shadows(self, since: datetime | None = None, pipeline: str | None = None,
                            variant: str | None = None, *, after_id: int | None = None,
                            limit: int | None = None, evals: bool | str = False) -> list[dict[str, Any]]:
        """Shadow results, filtered, joined and paged like `query_turns`."""
        return await self._query_joined(schema.shadow_results, since, pipeline, variant, after_id, limit,
                                        evals)

    async def count_turns(self, since: datetime | None = None, pipeline: str | None = None,
                          variant: str | None = None, evals: bool | str = False) -> int:
        """How many turns `query_turns` would return."""
        return await self._count_joined(schema.turns, since, pipeline, variant, evals)

    async def count_shadows(self, since: datetime | None = None, pipeline: str | None = None,
                            variant: str | None = None, evals: bool | str = False) -> int:
        """How many shadow results `query_shadows` would return."""
        return await self._count_joined(schema.shadow_results, since, pipeline, variant, evals)

    async def recent_calls(self, limit: int = 50, since: datetime | None = None,
                           pipeline: str | None = None) -> list[dict[str, Any]]:
        """The `limit` latest calls started at or after `since`, newest first (the dashboard's list)."""
        c = schema.calls.c
        query = select(schema.calls).order_by(c.started_at.desc(), c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(c.started_at >= _utc(since))
        if pipeline is not None:
            query = query.where(c.pipeline == pipeline)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [{**row, "started_at": _utc(row["started_at"]), "ended_at": _utc(row["ended_at"])}
                for row in rows]

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call's row with its turns and shadow results (`turns`, `shadows`, in order), or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(schema.calls).where(schema.calls.c.id == call_id))).mappings().first()
            turns = (await connection.execute(
                select(schema.turns).where(schema.turns.c.call_id == call_id)
                .order_by(schema.turns.c.index, schema.turns.c.id))).mappings().all()
            shadows = (await connection.execute(
                select(schema.shadow_results).where(schema.shadow_results.c.call_id == call_id)
                .order_by(schema.shadow_results.c.turn_index, schema.shadow_results.c.id))).mappings().all()
        if row is None and not turns:
            return None
        call = {"id": call_id} if row is None else {
            **row, "started_at": _utc(row["started_at"]), "ended_at": _utc(row["ended_at"])}
        call["turns"] = [{**t, "created_at": _utc(t["created_at"])} for t in turns]
        call["shadows"] = [{**s, "created_at": _utc(s["created_at"])} for s in shadows]
        return call

    async def add_eval_result(self, row: dict[str, Any], *, created_at: datetime | None = None) -> None:
        """Record what `switchboard eval` found for one call (a row of `eval_results`)."""
        known = {column.name for column in schema.eval_results.columns} - {"id", "created_at"}
        async with self._engine.begin() as connection:
            await connection.execute(insert(schema.eval_results).values(
                **{key: value for key, value in row.items() if key in known},
                created_at=_utc(created_at or datetime.now(UTC))))

    async def query_eval_results(self, run: str) -> list[dict[str, Any]]:
        """An eval run's results in order, each with its call's turns (`turns`, in order)."""
        results, turns = schema.eval_results, schema.turns
        async with self._engine.connect() as connection:
            rows = (await connection.execute(
                select(results).where(results.c.run == run).order_by(results.c.id))).mappings().all()
            ids = sorted({row["call_id"] for row in rows})
            turn_rows = (await connection.execute(
                select(turns).where(turns.c.call_id.in_(ids)).order_by(turns.c.index, turns.c.id)
            )).mappings().all() if ids else []
        by_call: dict[str, list[dict[str, Any]]] = {}
        for turn in turn_rows:
            by_call.setdefault(turn["call_id"], []).append(dict(turn))
        return [{**row, "created_at": _utc(row["created_at"]), "turns": by_call.get(row["call_id"], [])}
                for row in rows]

    async def eval_runs(self, limit: int = 20) -> list[str]:
        """The latest eval runs' ids, newest first."""
        results = schema.eval_results
        query = (select(results.c.run, func.max(results.c.id).label("last")).group_by(results.c.run)
                 .order_by(func.max(results.c.id).desc()).limit(limit))
        async with self._engine.connect() as connection:
            return [row[0] for row in (await connection.execute(query)).all()]

    async def eval_run_rows(self, limit: int = 50) -> list[dict[str, Any]]:
        """The verdicts of the latest `limit` eval runs, without their calls' turns (the dashboard's list of
        runs): run, scenario, arm, kind, passed, created_at, in order."""
        results = schema.eval_results.c
        latest = (select(results.run).group_by(results.run).order_by(func.max(results.id).desc())
                  .limit(limit).subquery())
        query = (select(results.run, results.scenario, results.arm, results.kind, results.passed,
                        results.created_at)
                 .where(results.run.in_(select(latest.c.run))).order_by(results.id))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [{**row, "created_at": _utc(row["created_at"])} for row in rows]

    async def _query_joined(self, table: Any, since: datetime | None, pipeline: str | None,
                            variant: str | None, after_id: int | None = None,
                            limit: int | None = None, evals: bool | str = False) -> list[dict[str, Any]]:
        c, calls = table.c, schema.calls.c
        query = _filtered(select(table, calls.pipeline, calls.variant, calls.carrier, calls.config_version,
                                 calls.config_file), table, since, pipeline, variant, evals)
        if limit is None:
            query = query.order_by(c.created_at, c.id)
        else:
            query = query.order_by(c.id).limit(limit)
        if after_id is not None:
            query = query.where(c.id > after_id)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [{**row, "created_at": _utc(row["created_at"])} for row in rows]

    async def _count_joined(self, table: Any, since: datetime | None, pipeline: str | None,
                            variant: str | None, evals: bool | str = False) -> int:
        query = _filtered(select(func.count()), table, since, pipeline, variant, evals)
        async with self._engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())


def _filtered(query: Any, table: Any, since: datetime | None, pipeline: str | None,
              variant: str | None, evals: bool | str = False) -> Any:
    """`query` over `table` joined to its call's row, with the filters of `query_turns`."""
    c, calls = table.c, schema.calls.c
    query = query.select_from(table.outerjoin(schema.calls, c.call_id == calls.id))
    if evals is False:  # live traffic only
        query = query.where(calls.eval_run.is_(None))
    elif isinstance(evals, str):
        query = query.where(calls.eval_run == evals)
    if since is not None:
        query = query.where(c.created_at >= _utc(since))
    if pipeline is not None:
        query = query.where(calls.pipeline == pipeline)
    if variant is not None:
        query = query.where(_is_variant(calls.variant, variant))
    return query


def _is_variant(column: Any, wanted: str) -> ColumnElement[bool]:
    """A call's variant is `wanted`, or has it as one of its "+"-joined parts (`gpt` matches `gpt+alloy`).
    Case-sensitive on SQLite too (its LIKE is not)."""
    return _position(literal("+") + column + literal("+"), f"+{wanted}+") > 0


class _position(FunctionElement[int]):
    """The 1-based position of a substring in a string, 0 when absent: instr() / strpos()."""

    type = Integer()
    inherit_cache = True


@compiles(_position)
def _position_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(_position, "postgresql")
def _position_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers don't block the writer; a crash loses no committed turn), and wait for locks held
    by other processes instead of failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()

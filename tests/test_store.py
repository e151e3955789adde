"""The call store: round trip on SQLite (and PostgreSQL when SWITCHBOARD_TEST_POSTGRES_URL is set), the
schema version table and its upgrades, and the writer staying out of the call's way when the database
is down."""

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table
from sqlalchemy.exc import IntegrityError, OperationalError

from switchboard.core.metrics import TurnMetrics
from switchboard.store import CallStore, SchemaError, StoreWriter, normalize_url
from switchboard.store.schema import MIGRATIONS, latest_version
from switchboard.store.writer import is_transient

POSTGRES_URL = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")
# CI sets SWITCHBOARD_REQUIRE_POSTGRES=1 once it has started a server: then a missing URL fails, never skips
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL and os.environ.get("SWITCHBOARD_REQUIRE_POSTGRES") != "1",
    reason="set SWITCHBOARD_TEST_POSTGRES_URL to a postgresql:// URL")


def a_turn(call_id: str = "CA1", index: int = 1, **changes) -> TurnMetrics:
    """A real turn's metrics: clock readings in monotonic seconds, failover notes, vendors."""
    metrics = TurnMetrics(
        call_id=call_id, index=index, kind="reply",
        speech_start=100.0, speech_end=101.5, endpoint=101.8, stt_done=102.05, llm_first_token=102.4,
        first_chunk=102.5, tts_first_byte=102.62, first_audio_sent=102.7, turn_done=104.0,
        transcript="what are your opening hours", reply_text="We open at nine. Anything else?",
        reply_heard="We open at nine.", interrupted=True,
        failures=["llm openai/gpt-4o-mini attempt 1: timeout: no first token within 2 s"],
        vendors={"stt": "pocketsphinx/en-us", "llm": "openai/gpt-4o-mini", "tts": "espeak/en-us"},
        tokens_in=812, tokens_out=17, tts_chars=31, bot_audio_ms=1450,
    )
    for key, value in changes.items():
        setattr(metrics, key, value)
    return metrics


async def round_trip(url: str) -> None:
    store = CallStore(url)
    await store.open()
    try:
        call_id = f"CA{uuid.uuid4().hex}"  # a shared PostgreSQL database may hold earlier runs
        started = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
        await store.start_call(call_id, "support", started_at=started, from_number="+15550001",
                               to_number="+15550002", carrier="twilio", variant="b")
        metrics = a_turn(call_id)
        finished = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
        await store.add_turn(metrics, created_at=finished)
        greeting = TurnMetrics(call_id=call_id, index=0, kind="greeting", reply_text="Hello!")
        await store.add_turn(greeting, created_at=datetime(2025, 3, 1, 12, 0, 1, tzinfo=UTC))
        summary = {"turns": 2, "answered": 1, "voice_to_voice_ms_median": 1200.0, "recording": "r/x.wav"}
        await store.end_call(call_id, summary, ended_at=datetime(2025, 3, 1, 12, 1, tzinfo=UTC))

        calls = [c for c in await store.query_calls(pipeline="support") if c["id"] == call_id]
        assert calls == [{
            "id": call_id, "pipeline": "support", "started_at": started,
            "ended_at": datetime(2025, 3, 1, 12, 1, tzinfo=UTC), "from_number": "+15550001",
            "to_number": "+15550002", "carrier": "twilio", "variant": "b", "summary": summary,
            "recording": "r/x.wav", "eval_run": None, "eval_scenario": None, "config_version": None,
            "config_file": None,
        }]
        turns = [t for t in await store.query_turns(variant="b") if t["call_id"] == call_id]
        assert [t["index"] for t in turns] == [0, 1]  # oldest first
        turn = turns[1]
        expected = metrics.summary()
        for key in ("index", "kind", "endpoint_ms", "stt_done_ms", "llm_first_token_ms", "first_chunk_ms",
                    "tts_first_byte_ms", "first_audio_sent_ms", "voice_to_voice_ms", "speech_ms",
                    "transcript", "reply_text", "reply_heard", "interrupted", "ended_call", "error",
                    "failures", "tokens_in", "tokens_out", "tts_chars", "bot_audio_ms"):
            assert turn[key] == expected[key], key
        assert turn["voice_to_voice_ms"] == 1200.0
        assert (turn["stt_vendor"], turn["llm_vendor"], turn["tts_vendor"]) == (
            "pocketsphinx/en-us", "openai/gpt-4o-mini", "espeak/en-us")
        assert turn["created_at"] == finished
        assert (turn["pipeline"], turn["variant"], turn["carrier"]) == ("support", "b", "twilio")
        assert turns[0]["voice_to_voice_ms"] is None and turns[0]["llm_vendor"] is None

        later = datetime(2025, 3, 1, 12, 0, 3, tzinfo=UTC)
        since = [t["call_id"] for t in await store.query_turns(since=later)]
        assert since.count(call_id) == 1
        assert not [t for t in await store.query_turns(pipeline="elsewhere") if t["call_id"] == call_id]
        assert await store.query_shadows(pipeline="support", variant="b") == []
    finally:
        await store.close()


async def test_round_trip_sqlite(tmp_path):
    await round_trip(str(tmp_path / "switchboard.db"))


@needs_postgres
async def test_round_trip_postgres():
    assert POSTGRES_URL, "SWITCHBOARD_REQUIRE_POSTGRES=1 but SWITCHBOARD_TEST_POSTGRES_URL is not set"
    await round_trip(POSTGRES_URL)
    second = CallStore(POSTGRES_URL)  # opening an existing database again is a no-op
    await second.open()
    assert second.version == latest_version()
    await second.close()


async def test_schema_version_recorded_and_open_is_idempotent(tmp_path):
    path = tmp_path / "s.db"
    store = CallStore(str(path))
    await store.open()
    await store.open()
    await store.start_call("CA1", "default")
    await store.close()
    again = CallStore(f"sqlite:///{path}")
    await again.open()
    assert again.version == latest_version()
    assert len(await again.query_calls()) == 1
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(latest_version(),)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "calls", "turns", "shadow_results"} <= tables


def drop_version_7(db: sqlite3.Connection) -> None:
    """Undo schema versions 9 (the configuration versions) and 7 (the eval tags, tool arguments and eval
    results)."""
    drop_version_9(db)
    for table, column in (("calls", "eval_run"), ("calls", "eval_scenario"), ("turns", "tool_args")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DROP TABLE eval_results")


def drop_version_9(db: sqlite3.Connection) -> None:
    for column in ("config_version", "config_file"):
        db.execute(f"ALTER TABLE calls DROP COLUMN {column}")


async def test_a_version_8_database_gets_the_config_version_columns(tmp_path):
    path = tmp_path / "v8.db"
    store = CallStore(str(path))
    await store.open()
    await store.start_call("CA-old", "default")
    await store.close()
    with sqlite3.connect(path) as db:  # make it what schema version 8 wrote
        drop_version_9(db)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (8, '2026-12-01 00:00:00')")
    upgraded = CallStore(str(path))
    await upgraded.open()
    await upgraded.start_call("CA-new", "default", config_version=("0123456789", "abcdefabcd"))
    rows = {row["id"]: row for row in await upgraded.recent_calls()}
    await upgraded.close()
    assert (rows["CA-old"]["config_version"], rows["CA-old"]["config_file"]) == (None, None)
    assert (rows["CA-new"]["config_version"], rows["CA-new"]["config_file"]) == ("0123456789", "abcdefabcd")


async def test_a_version_1_database_gets_the_turn_taking_and_backchannel_columns(tmp_path):
    path = tmp_path / "v1.db"
    store = CallStore(str(path))
    await store.open()
    await store.add_turn(a_turn())
    await store.close()
    with sqlite3.connect(path) as db:  # make it what Switchboard's first schema wrote
        for column in ("stt_ms", "speculated", "speculation_dropped", "reads", "backchannels", "undone",
                       "audio_tokens_in", "audio_tokens_out", "tool_calls", "tool_errors", "tool_invalid",
                       "tool_ms", "tools_used", "sounds_finished", "hedges"):
            db.execute(f"ALTER TABLE turns DROP COLUMN {column}")
        drop_version_7(db)
        for column in ("tool_calls", "tool_invalid"):
            db.execute(f"ALTER TABLE shadow_results DROP COLUMN {column}")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (1, '2026-11-01 00:00:00')")

    upgraded = CallStore(str(path))
    await upgraded.open()
    turn = a_turn()
    turn.speculated, turn.speculation_dropped, turn.reads, turn.backchannels = 2, 1, "complete", 3
    await upgraded.add_turn(turn)
    rows = await upgraded.query_turns()
    await upgraded.close()
    assert [(r["speculated"], r["speculation_dropped"], r["reads"], r["backchannels"]) for r in rows] == [
        (0, 0, None, 0), (2, 1, "complete", 3)]


async def test_a_version_4_database_gets_the_tool_columns(tmp_path):
    path = tmp_path / "v4.db"
    store = CallStore(str(path))
    await store.open()
    await store.add_turn(a_turn())
    await store.close()
    with sqlite3.connect(path) as db:  # make it what schema version 4 wrote
        for column in ("tool_calls", "tool_errors", "tool_invalid", "tool_ms", "tools_used",
                       "sounds_finished", "hedges"):
            db.execute(f"ALTER TABLE turns DROP COLUMN {column}")
        drop_version_7(db)
        for column in ("tool_calls", "tool_invalid"):
            db.execute(f"ALTER TABLE shadow_results DROP COLUMN {column}")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (4, '2026-11-20 00:00:00')")

    upgraded = CallStore(str(path))
    await upgraded.open()
    turn = a_turn()
    turn.note_tool("book_table", "ok", 210.0)
    turn.note_tool("book_table", "invalid", 0.4)
    turn.note_tool("check_order", "timeout", 5000.0)
    await upgraded.add_turn(turn)
    rows = await upgraded.query_turns()
    await upgraded.close()
    assert [(r["tool_calls"], r["tool_errors"], r["tool_invalid"], r["tool_ms"], r["tools_used"])
            for r in rows] == [(0, 0, 0, None, None),
                               (3, 1, 1, 5210.4, ["book_table:ok", "book_table:invalid",
                                                  "check_order:timeout"])]


async def test_a_version_5_database_gets_the_audio_end_of_turn_column(tmp_path):
    path = tmp_path / "v5.db"
    store = CallStore(str(path))
    await store.open()
    await store.add_turn(a_turn())
    await store.close()
    with sqlite3.connect(path) as db:  # make it what schema version 5 wrote
        db.execute("ALTER TABLE turns DROP COLUMN sounds_finished")
        drop_version_7(db)
        db.execute("ALTER TABLE turns DROP COLUMN hedges")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (5, '2026-11-28 00:00:00')")

    upgraded = CallStore(str(path))
    await upgraded.open()
    turn = a_turn()
    turn.reads, turn.sounds_finished = "complete", 0.061
    await upgraded.add_turn(turn)
    rows = await upgraded.query_turns()
    await upgraded.close()
    assert [(r["reads"], r["sounds_finished"]) for r in rows] == [(None, None), ("complete", 0.061)]


async def test_a_version_7_database_gets_the_hedges_column(tmp_path):
    path = tmp_path / "v7.db"
    store = CallStore(str(path))
    await store.open()
    await store.add_turn(a_turn())
    await store.close()
    with sqlite3.connect(path) as db:  # make it what schema version 7 wrote
        db.execute("ALTER TABLE turns DROP COLUMN hedges")
        drop_version_9(db)
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version VALUES (7, '2026-12-07 00:00:00')")

    upgraded = CallStore(str(path))
    await upgraded.open()
    turn = a_turn()
    turn.hedges = ["tts openai/tts-1 -> openai/tts-1: won"]
    await upgraded.add_turn(turn)
    rows = await upgraded.query_turns()
    await upgraded.close()
    assert [r["hedges"] for r in rows] == [None, ["tts openai/tts-1 -> openai/tts-1: won"]]


async def test_an_older_schema_is_upgraded_step_by_step(tmp_path):
    url = str(tmp_path / "s.db")
    store = CallStore(url)
    await store.open()
    await store.add_turn(a_turn())
    await store.close()

    ran = []

    current = latest_version()

    def add_notes(connection: Connection) -> None:  # the current version -> the next
        ran.append(current + 1)
        Table("notes", MetaData(), Column("id", Integer, primary_key=True)
              ).create(connection)

    upgraded = CallStore(url, migrations=[*MIGRATIONS, add_notes])
    await upgraded.open()
    assert upgraded.version == current + 1 and ran == [current + 1]
    assert len(await upgraded.query_turns()) == 1  # the data survived
    await upgraded.close()
    again = CallStore(url, migrations=[*MIGRATIONS, add_notes])
    await again.open()  # already there: nothing runs
    assert ran == [current + 1]
    await again.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        versions = db.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(current,), (current + 1,)]

    older_code = CallStore(url)  # knows only the current version
    with pytest.raises(SchemaError, match="newer"):
        await older_code.open()
    assert not older_code.is_open


def test_normalize_url():
    assert normalize_url(None) == "sqlite+aiosqlite:///switchboard.db"
    assert normalize_url("calls.db") == "sqlite+aiosqlite:///calls.db"
    assert normalize_url("sqlite:////var/lib/sb.db") == "sqlite+aiosqlite:////var/lib/sb.db"
    assert normalize_url("postgresql://u:p@db/sb") == "postgresql+asyncpg://u:p@db/sb"
    assert normalize_url("postgresql+asyncpg://u:p@db/sb") == "postgresql+asyncpg://u:p@db/sb"


# --- the writer ---------------------------------------------------------------------------------------


async def test_writer_writes_in_the_background_in_order(tmp_path):
    store = CallStore(str(tmp_path / "w.db"))
    async with StoreWriter(store) as writer:  # opens the store itself
        writer.call_started("CA9", "default", from_number="+1", to_number="+2", carrier="exotel")
        for index in range(5):
            writer.turn(a_turn("CA9", index))
        metrics = a_turn("CA9", 5)
        writer.turn(metrics)
        metrics.transcript = "changed after the turn was handed over"
        writer.call_ended("CA9", {"turns": 6}, recording="rec.wav")
        assert writer.pending > 0  # nothing was awaited: the caller never waits on the database
    assert (writer.written, writer.dropped, writer.pending) == (8, 0, 0)
    turns = await store.query_turns()
    assert [t["index"] for t in turns] == list(range(6))
    assert turns[-1]["transcript"] == "what are your opening hours"
    [call] = await store.query_calls()
    assert (call["carrier"], call["summary"], call["recording"]) == ("exotel", {"turns": 6}, "rec.wav")
    assert call["started_at"] <= call["ended_at"]
    await store.close()


async def test_writer_keeps_accepting_turns_while_the_database_is_unavailable(tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = CallStore(str(blocker / "calls.db"))  # cannot be created, even by root
    writer = StoreWriter(store, max_pending=3, retry_delays_s=(0.01, 0.02))
    with caplog.at_level(logging.ERROR, logger="switchboard.store"):
        await writer.start()
        writer.call_started("CA1", "default")
        for index in range(10):
            writer.turn(a_turn("CA1", index))  # never raises
        writer.call_ended("CA1", {})
        async with asyncio.timeout(5):  # wait until it has retried at least twice (a deadline, no race)
            while writer.failures < 2:  # noqa: ASYNC110 (the writer's counter, no event to wait on)
                await asyncio.sleep(0.01)
        assert writer.failures >= 2 and writer.written == 0
        assert writer.pending == 3 and writer.dropped == 9  # bounded: the rest are dropped and counted
        await writer.aclose(timeout_s=0.05)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # each kind of trouble once (per minute at most), however often it happened
    assert len([m for m in errors if "could not open the database, retrying" in m]) == 1
    assert len([m for m in errors if "records already waiting for the database" in m]) == 1
    assert "not written at shutdown" in errors[-1]
    assert writer.dropped == 12


class FlakyStore:
    """Stands in for CallStore: the first `down` writes fail as if the server were unreachable."""

    url = "postgresql+asyncpg://db/sb"
    is_open = True

    def __init__(self, down: int, error: Exception | None = None) -> None:
        self.down = down
        self.error = error or OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        self.turns: list[int] = []

    async def add_turn(self, metrics: TurnMetrics, *, created_at: datetime | None = None) -> None:
        if self.down:
            self.down -= 1
            raise self.error
        self.turns.append(metrics.index)


async def test_writer_retries_until_the_database_is_back(caplog):
    store = FlakyStore(down=3)
    writer = StoreWriter(store, retry_delays_s=(0.001, 0.002))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="switchboard.store"):
        await writer.start()
        for index in range(4):
            writer.turn(a_turn(index=index))
        await writer.aclose(timeout_s=2)
    assert store.turns == [0, 1, 2, 3]  # nothing lost, order kept
    assert (writer.failures, writer.dropped, writer.written) == (3, 0, 4)
    assert "retrying" in caplog.records[0].getMessage()


async def test_writer_drops_a_record_the_database_refuses():
    store = FlakyStore(down=1, error=IntegrityError("INSERT", {}, Exception("duplicate key")))
    writer = StoreWriter(store)  # type: ignore[arg-type]
    await writer.start()
    writer.turn(a_turn(index=0))
    writer.turn(a_turn(index=1))
    await writer.aclose(timeout_s=2)
    assert store.turns == [1] and writer.dropped == 1


def test_transient_errors():
    assert is_transient(OperationalError("x", {}, Exception("database or disk is full")))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(IntegrityError("x", {}, Exception("duplicate")))
    assert not is_transient(ValueError())


async def test_a_crash_loses_nothing_committed(tmp_path):
    """Each turn is its own committed transaction: a process killed (SIGKILL, no clean-up at all) right
    after writing a turn leaves it in the file, and another connection sees it."""
    path = tmp_path / "c.db"
    code = f"""
import asyncio, os, signal
from switchboard.store import CallStore
from tests.test_store import a_turn

async def write_then_die():
    store = CallStore({str(path)!r})
    await store.open()
    await store.add_turn(a_turn())
    os.kill(os.getpid(), signal.SIGKILL)  # never closes the store

asyncio.run(write_then_die())
"""
    repo = Path(__file__).parent.parent
    killed = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=repo)
    assert await killed.wait() == -signal.SIGKILL
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM turns").fetchone() == (1,)


async def shadows_and_variant_parts(url: str) -> None:
    from switchboard.core.metrics import ShadowResult

    store = CallStore(url)
    await store.open()
    writer = StoreWriter(store)
    try:
        run = uuid.uuid4().hex  # a shared PostgreSQL database may hold earlier runs
        ids = {variant: f"CA{run}-{n}" for n, variant in enumerate(["gpt", "gpt+alloy", "claude+alloy",
                                                                     "GPT+alloy", "gpt-4o+alloy"])}
        for variant, call_id in ids.items():
            await store.start_call(call_id, "ab", variant=variant)
            await store.add_turn(a_turn(call_id))
        async with writer:  # the server's way: queued, written in the background
            writer.shadow(ShadowResult(ids["gpt+alloy"], 1, "groq", "groq/llama", ttft_ms=210.5,
                                       total_ms=900.0, tokens_in=812, tokens_out=4, text="We open at nine."))
            writer.shadow(ShadowResult(ids["gpt"], 1, "hang", "hang/forever",
                                       error="hang: timeout: no first token within 5 s"))

        def ours(rows):
            call_ids = (row.get("call_id", row.get("id")) for row in rows)  # turns, or calls
            return sorted(call_id for call_id in call_ids if call_id.startswith(f"CA{run}"))

        cases = [("gpt", ["gpt", "gpt+alloy"]), ("alloy", ["gpt+alloy", "claude+alloy", "GPT+alloy",
                 "gpt-4o+alloy"]), ("gpt+alloy", ["gpt+alloy"]), ("GPT", ["GPT+alloy"]),
                 ("claude", ["claude+alloy"]), ("claude+echo", []), ("gp", [])]
        for wanted, expected in cases:
            assert ours(await store.query_turns(variant=wanted)) == sorted(ids[v] for v in expected), wanted
            assert ours(await store.query_calls(variant=wanted)) == sorted(ids[v] for v in expected), wanted
        shadows = {row["name"]: row for row in await store.query_shadows(variant="gpt")
                   if row["call_id"].startswith(f"CA{run}")}
        assert {name: (row["call_id"], row["turn_index"], row["vendor"], row["ttft_ms"], row["total_ms"],
                       row["tokens_in"], row["tokens_out"], row["error"], row["text"], row["variant"])
                for name, row in shadows.items()} == {
            "groq": (ids["gpt+alloy"], 1, "groq/llama", 210.5, 900.0, 812, 4, None, "We open at nine.",
                     "gpt+alloy"),
            "hang": (ids["gpt"], 1, "hang/forever", None, None, None, None,
                     "hang: timeout: no first token within 5 s", "", "gpt"),
        }
        assert writer.written == 2 and writer.dropped == 0
    finally:
        await store.close()


async def test_shadow_results_and_variant_parts_sqlite(tmp_path):
    await shadows_and_variant_parts(str(tmp_path / "switchboard.db"))


@needs_postgres
async def test_shadow_results_and_variant_parts_postgres():
    assert POSTGRES_URL, "SWITCHBOARD_REQUIRE_POSTGRES=1 but SWITCHBOARD_TEST_POSTGRES_URL is not set"
    await shadows_and_variant_parts(POSTGRES_URL)


async def lost_calls_are_closed(url: str) -> None:
    """A call a crash left open is closed as lost, ended at its last turn, with its turns counted; a call
    that ended properly and (with a quiet period) one still writing turns are left alone."""
    from datetime import timedelta

    store = CallStore(url)
    await store.open()
    try:
        run = uuid.uuid4().hex
        lost, finished, live = (f"CA{run}-{name}" for name in ("lost", "finished", "live"))
        long_ago = datetime.now(UTC) - timedelta(hours=2)
        for call_id in (lost, finished):
            await store.start_call(call_id, "support", started_at=long_ago)
        await store.add_turn(a_turn(lost, 1), created_at=long_ago + timedelta(seconds=20))
        last_turn = long_ago + timedelta(seconds=40)
        await store.add_turn(a_turn(lost, 2, error="llm: timeout"), created_at=last_turn)
        await store.end_call(finished, {"turns": 0}, ended_at=long_ago + timedelta(seconds=5))
        await store.start_call(live, "support")  # started just now, in another process
        await store.add_turn(a_turn(live, 1))

        closed = await store.close_lost_calls(quiet_for=timedelta(minutes=15))
        assert [c for c in closed if c.startswith(f"CA{run}")] == [lost]
        row = await store.get_call(lost)
        assert row["ended_at"] == last_turn
        assert row["summary"]["outcome"] == "lost"
        assert (row["summary"]["turns"], row["summary"]["interrupted"], row["summary"]["errors"]) == (2, 2, 1)
        assert (await store.get_call(finished))["summary"] == {"turns": 0}
        assert (await store.get_call(live))["ended_at"] is None
        # the call that was in fact alive ends properly later: its own summary replaces the guess
        assert lost not in await store.close_lost_calls(quiet_for=timedelta(0))
    finally:
        await store.close()


async def test_calls_left_open_by_a_crash_are_closed_as_lost_sqlite(tmp_path):
    await lost_calls_are_closed(str(tmp_path / "c.db"))


@needs_postgres
async def test_calls_left_open_by_a_crash_are_closed_as_lost_postgres():
    await lost_calls_are_closed(POSTGRES_URL)


async def test_a_server_starting_on_sqlite_closes_every_call_left_open(tmp_path):
    """SQLite serves one process, so at start-up every open call is a crashed one, however recent."""
    from switchboard.config import parse_config
    from switchboard.pipeline.call import Providers
    from switchboard.server import create_app, running
    from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

    path = tmp_path / "c.db"
    store = CallStore(str(path))
    await store.open()
    await store.start_call("CAcrashed", "default")
    await store.add_turn(a_turn("CAcrashed", 1))
    await store.close()

    config = parse_config("pipelines: {default: {stt: {provider: pocketsphinx}, llm: {provider: scripted}, "
                          "tts: {provider: espeak}}}")
    providers = Providers(stt=InstantSTT(), llm=InstantLLM(), tts=InstantTTS())
    app = create_app(config, providers={"default": providers}, store_url=str(path))
    async with running(app):
        for _ in range(100):
            row = await store_row(path, "CAcrashed")
            if row["ended_at"] is not None:
                break
            await asyncio.sleep(0.05)
    assert row["summary"]["outcome"] == "lost" and row["summary"]["turns"] == 1


async def store_row(path: Path, call_id: str) -> dict:
    store = CallStore(str(path))
    await store.open()
    try:
        return await store.get_call(call_id)
    finally:
        await store.close()

"""The call store's tables, and how a database is brought to the current schema version.

`schema_version` holds one row per version applied. A new database gets every table as defined here and
the latest version; an older one runs the steps of `MIGRATIONS` from its version on, each in the same
transaction as the version row it records. Version 1 is the tables below; to change the schema, change
the tables here AND append a step (a function of a sync `Connection`, run through `run_sync`) that does
the same to an existing database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)

Migration = Callable[[Connection], None]  # upgrades an existing database by one version

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("id", String(128), primary_key=True),  # the carrier's call id (Twilio CallSid)
    Column("pipeline", String(128), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),  # UTC wall time
    Column("ended_at", DateTime(timezone=True)),
    Column("from_number", String(64), nullable=False, default=""),
    Column("to_number", String(64), nullable=False, default=""),
    Column("carrier", String(32), nullable=False, default=""),
    Column("variant", String(128)),  # A/B variant name, when the pipeline has variants
    Column("summary", JSON),  # pipeline.metrics.call_summary(), written when the call ends
    Column("recording", Text),  # path of the call's WAV, if recorded
    # version 7: a call placed by `switchboard eval` (evals/): its run and scenario; NULL for live traffic
    Column("eval_run", String(64)),
    Column("eval_scenario", String(128)),
    # version 9: which configuration answered: a short hash of the pipeline's effective settings, and of
    # the file (`switchboard report --config-version` splits by the first)
    Column("config_version", String(16)),
    Column("config_file", String(16)),
    Index("ix_calls_started_at", "started_at"),
)

# The *_ms columns are TurnMetrics.summary()'s: milliseconds after the end of the caller's speech.
STAGE_MS_COLUMNS = (
    "endpoint_ms",
    "stt_done_ms",
    "llm_first_token_ms",
    "first_chunk_ms",
    "tts_first_byte_ms",
    "first_audio_sent_ms",
    "voice_to_voice_ms",
    "speech_ms",
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # No foreign key on purpose: a turn is kept even if its call's row could not be written.
    Column("call_id", String(128), nullable=False),
    Column("index", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    *(Column(name, Float) for name in STAGE_MS_COLUMNS),
    Column("transcript", Text, nullable=False, default=""),
    Column("reply_text", Text, nullable=False, default=""),
    Column("reply_heard", Text, nullable=False, default=""),
    Column("interrupted", Boolean, nullable=False, default=False),
    Column("ended_call", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("failures", JSON, nullable=False),  # list[str]
    Column("stt_vendor", String(256)),  # "vendor/model" of the provider that served the stage
    Column("llm_vendor", String(256)),
    Column("tts_vendor", String(256)),
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("tts_chars", Integer, nullable=False, default=0),
    Column("bot_audio_ms", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),  # UTC wall time the turn finished
    # turn-taking (version 2): speculative starts at pauses, those dropped, how the pause's words read
    Column("stt_ms", Float),  # the STT request's own latency (stt_done_ms − endpoint_ms is not, at a pause)
    Column("speculated", Integer, nullable=False, default=0),
    Column("speculation_dropped", Integer, nullable=False, default=0),
    Column("reads", String(16)),
    # version 3: the caller's backchannels ("yeah", "uh-huh") the bot went on through; a reply undone
    # because the caller went on as it started
    Column("backchannels", Integer, nullable=False, default=0),
    Column("undone", Boolean, nullable=False, default=False),
    Column("audio_tokens_in", Integer),  # a speech-to-speech model's audio tokens (version 4)
    Column("audio_tokens_out", Integer),
    # tools (version 5): calls of declared tools, failed ones, refused ones (arguments, unknown tool),
    # their summed latency, and "name:status" of each
    Column("tool_calls", Integer, nullable=False, default=0),
    Column("tool_errors", Integer, nullable=False, default=0),
    Column("tool_invalid", Integer, nullable=False, default=0),
    Column("tool_ms", Float),
    Column("tools_used", JSON),
    # version 6: the audio end-of-turn model's probability that the caller had finished, at the last pause
    Column("sounds_finished", Float),
    Column("tool_args", JSON),  # version 7: [{"name", "status", "arguments"}] of each tool call
    # version 8: stalled requests hedged (pipeline/hedging.py), "stage vendor -> vendor: outcome" each
    Column("hedges", JSON),
    Index("ix_turns_call_id", "call_id"),
    Index("ix_turns_created_at", "created_at"),
)

shadow_results = Table(  # shadow LLM answers to live turns (filled by the shadow feature, later)
    "shadow_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(128), nullable=False),
    Column("turn_index", Integer, nullable=False),  # with call_id: the live turn it shadows
    Column("name", String(128), nullable=False),
    Column("vendor", String(256), nullable=False),  # "vendor/model"
    Column("ttft_ms", Float),  # from the request to the first token
    Column("total_ms", Float),
    Column("tokens_in", Integer),
    Column("tokens_out", Integer),
    Column("error", Text),
    Column("text", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("tool_calls", Integer, nullable=False, default=0),  # version 5
    Column("tool_invalid", Integer, nullable=False, default=0),
    Index("ix_shadow_results_turn", "call_id", "turn_index"),
)

eval_results = Table(  # version 7: what `switchboard eval` found, one row per eval call (or replayed pair)
    "eval_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", String(64), nullable=False),
    Column("scenario", String(128), nullable=False),
    Column("arm", String(128), nullable=False),  # the pipeline the call was placed on
    Column("call_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False, default="call"),  # "call", or "replay" (a replayed call)
    Column("passed", Boolean),  # every check and judged criterion passed; NULL: unjudged
    Column("checks", JSON, nullable=False),  # [{"name", "passed", "detail"}]
    Column("scores", JSON, nullable=False),  # criterion -> judged score 1-5
    Column("judge", JSON),  # the judge's answer (evidence, reasons), or {"unjudged": reason}
    Column("judge_tokens_in", Integer),
    Column("judge_tokens_out", Integer),
    Column("judge_cost", Float),  # USD, from the judge's price
    Column("talk_over_s", Float),  # bot and caller audible at once, as the caller heard it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_eval_results_run", "run"),
)


def _add_turn_taking_columns(connection: Connection) -> None:
    """Version 2: the turn-taking columns of `turns`."""
    for ddl in ("stt_ms FLOAT", "speculated INTEGER NOT NULL DEFAULT 0",
                "speculation_dropped INTEGER NOT NULL DEFAULT 0", "reads VARCHAR(16)"):
        connection.execute(text(f"ALTER TABLE turns ADD COLUMN {ddl}"))


def _add_backchannels_column(connection: Connection) -> None:
    """Version 3: `turns.backchannels` and `turns.undone`."""
    connection.execute(text("ALTER TABLE turns ADD COLUMN backchannels INTEGER NOT NULL DEFAULT 0"))
    connection.execute(text("ALTER TABLE turns ADD COLUMN undone BOOLEAN NOT NULL DEFAULT FALSE"))


def _add_audio_token_columns(connection: Connection) -> None:
    """Version 4: a speech-to-speech model's audio tokens on `turns`."""
    for ddl in ("audio_tokens_in INTEGER", "audio_tokens_out INTEGER"):
        connection.execute(text(f"ALTER TABLE turns ADD COLUMN {ddl}"))


def _add_tool_columns(connection: Connection) -> None:
    """Version 5: the tool columns of `turns` and `shadow_results`."""
    for ddl in ("tool_calls INTEGER NOT NULL DEFAULT 0", "tool_errors INTEGER NOT NULL DEFAULT 0",
                "tool_invalid INTEGER NOT NULL DEFAULT 0", "tool_ms FLOAT", "tools_used JSON"):
        connection.execute(text(f"ALTER TABLE turns ADD COLUMN {ddl}"))
    for ddl in ("tool_calls INTEGER NOT NULL DEFAULT 0", "tool_invalid INTEGER NOT NULL DEFAULT 0"):
        connection.execute(text(f"ALTER TABLE shadow_results ADD COLUMN {ddl}"))


def _add_sounds_finished_column(connection: Connection) -> None:
    """Version 6: `turns.sounds_finished`."""
    connection.execute(text("ALTER TABLE turns ADD COLUMN sounds_finished FLOAT"))


def _add_eval_columns(connection: Connection) -> None:
    """Version 7: eval tags on `calls`, `turns.tool_args`, and the `eval_results` table."""
    for ddl in ("eval_run VARCHAR(64)", "eval_scenario VARCHAR(128)"):
        connection.execute(text(f"ALTER TABLE calls ADD COLUMN {ddl}"))
    connection.execute(text("ALTER TABLE turns ADD COLUMN tool_args JSON"))
    eval_results.create(connection, checkfirst=True)


def _add_hedges_column(connection: Connection) -> None:
    """Version 8: `turns.hedges`."""
    connection.execute(text("ALTER TABLE turns ADD COLUMN hedges JSON"))


def _add_config_version_columns(connection: Connection) -> None:
    """Version 9: `calls.config_version` and `calls.config_file`."""
    for ddl in ("config_version VARCHAR(16)", "config_file VARCHAR(16)"):
        connection.execute(text(f"ALTER TABLE calls ADD COLUMN {ddl}"))


# MIGRATIONS[i] upgrades a database from version i + 1 to i + 2. Version 1 needs no step.
MIGRATIONS: list[Migration] = [_add_turn_taking_columns, _add_backchannels_column, _add_audio_token_columns,
                               _add_tool_columns, _add_sounds_finished_column, _add_eval_columns,
                               _add_hedges_column, _add_config_version_columns]


class SchemaError(RuntimeError):
    """The database's schema is one this code cannot use (e.g. written by a newer Switchboard)."""


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return len(migrations) + 1


def upgrade(connection: Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Create or upgrade the schema on `connection` (inside the caller's transaction). Returns the version.

    Idempotent: a database already at the latest version is left alone."""
    latest = latest_version(migrations)
    if not inspect(connection).has_table(schema_version.name):
        metadata.create_all(connection)  # checkfirst: tables a crashed earlier attempt left are kept
        _record(connection, latest)
        return latest
    current = connection.execute(select(func.max(schema_version.c.version))).scalar()
    if current is None:  # the version table exists but is empty: an interrupted first start
        metadata.create_all(connection)
        _record(connection, latest)
        return latest
    if current > latest:
        raise SchemaError(f"the database is at schema version {current}, newer than this Switchboard "
                          f"understands ({latest}); upgrade Switchboard or use another database")
    for version in range(current + 1, latest + 1):
        migrations[version - 2](connection)
        _record(connection, version)
    return latest


def _record(connection: Connection, version: int) -> None:
    connection.execute(insert(schema_version).values(version=version, applied_at=datetime.now(UTC)))

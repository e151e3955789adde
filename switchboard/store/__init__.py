"""Call records: calls, turns (every metric) and shadow results, behind one small interface.

    store = CallStore(url)            # None: ./switchboard.db (SQLite, WAL); or postgresql+asyncpg://…
    await store.open()                # creates / upgrades the schema
    writer = StoreWriter(store)       # what the server uses: synchronous, off the audio path
    await writer.start()
    writer.call_started(call_id, pipeline, from_number=…, to_number=…, carrier=…, variant=…)
    writer.turn(metrics)              # fits create_app(on_turn=…)
    writer.shadow(result)             # a shadow LLM's answer (pipeline/shadow.py)
    writer.call_ended(call_id, summary, recording)
    await writer.aclose(); await store.close()
"""

from switchboard.store.calls import DEFAULT_URL, CallStore, normalize_url, turn_row
from switchboard.store.schema import SchemaError
from switchboard.store.writer import StoreWriter

__all__ = ["DEFAULT_URL", "CallStore", "SchemaError", "StoreWriter", "normalize_url", "turn_row"]

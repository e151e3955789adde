"""`switchboard report`: vendors side by side, from the turns in the call store.

One row per LLM vendor/model: live rows from `turns`, shadow rows from `shadow_results` (when there are
any). A live turn belongs to the LLM that answered it or, when none did, to the first LLM its failures
name (the one that failed); turns with no LLM at all (greetings) are left out of the figures and counted
(their STT/TTS cost counts, see below). `--html` writes the same with charts (pipeline/report_html.py).
The store is read PAGE_SIZE rows at a time; long reads show progress on stderr, never on stdout.

Figures, all in milliseconds (see pipeline/metrics.py; every reading is relative to the end of speech):
  voice-to-voice   first audio frame sent − speech end (p50/p90/p99)
  LLM TTFT         LLM first token − STT done: from the request to the first token (p50/p90)
  STT              the STT request's own latency (p50; rows from before speculation: STT done − endpoint)
  TTS first byte   TTS first byte − first speakable chunk (p50)
  errors %         turns that failed (the caller heard the apology)
  timeouts %       turns with a provider timeout in any stage (recovered or not)
  interrupt/undone %
                   turns the caller barged into / replies undone because the caller went on just as
                   the bot started (a cut-in, answered together with the rest of their sentence)
  tokens           mean input / output tokens per turn
  spec drop, bc/turn
                   speculative starts (STT/LLM/TTS begun at a pause) dropped because the caller went
                   on, per turn: the vendor cost of speculation; then the caller's backchannels ("yeah",
                   "uh-huh") the bot went on through, per turn
  tools/turn (invalid/err %)
                   calls of the pipeline's HTTP tools per turn (pipeline/tools.py); in brackets, of
                   those calls the % refused (arguments against the tool's schema, or a tool that does
                   not exist: how well the LLM uses tools) and the % whose request failed or timed out
                   (how well the tools work). Shadow rows: the tool calls of their one request per turn,
                   never run (no err %)
  $/call           estimated USD per call from `pricing:` (see below)
Under the table: requests hedged per stage and vendor (pipeline/hedging.py: a request whose first
result was late, asked again beside it), and how many of them the hedge answered first.
Significance: each row's TTFT against the fastest row's (lowest TTFT p50) with a two-sided
Mann-Whitney U test; p < `alpha` (0.05) is marked `*`. Rows with fewer than 2 samples are not tested.
Percentiles interpolate linearly between samples (numpy's default).

Cost per call (pipeline.yaml's `pricing:`, keyed "vendor/model" or a bare model name): a live row's
calls cost their LLM tokens at the row's LLM prices (`input_per_1m`, `output_per_1m`), plus the STT
audio at each turn's STT vendor's `per_minute`, plus the characters spoken at each turn's TTS vendor's
`per_1m_chars` (a speech-to-speech model's row: its text tokens at `input_per_1m` / `output_per_1m` and
its audio tokens at `audio_input_per_1m` / `audio_output_per_1m`) — so the STT and TTS spend of the
calls an LLM answered counts in that LLM's row, and so do
turns without an LLM stage (the greeting) of those calls. STT minutes are the caller's speech as the
turn records it (`speech_ms`, first to last voiced frame): a slight underestimate, since the pre-roll and
a short tail are sent too. Shadow rows cost their LLM tokens only (they are never transcribed or spoken).
The embedded engines (pocketsphinx, scripted, espeak) cost 0 unless priced. A row none of whose stages
has a price shows `-`; one that has prices for some stages but not for others shows the priced part with
a `+` (a lower bound) and lists what is unpriced (`cost_partial`, `cost_unpriced` in JSON).

The package: `rows.py` builds the report (`Row`, `Report`, `build_report`, costs, significance) with
`stats.py`'s percentiles and test; `table.py` writes it as text or JSON, `html.py` as a page;
`reading.py` reads the call store (`load`, `Progress`, `parse_since`, `load_pricing`); `cli.py` is the
command. Everything public is importable from `switchboard.report`.
"""

from __future__ import annotations

from switchboard.report.cli import add_arguments, by_config_version, main_report, run
from switchboard.report.reading import Progress, ProgressCallback, load, load_pricing, parse_since
from switchboard.report.rows import (
    ALPHA,
    FREE_VENDORS,
    TEST_NAME,
    Pricing,
    Report,
    Row,
    build_report,
    llm_of,
    pricing_from_config,
)
from switchboard.report.stats import mann_whitney_p, mann_whitney_p_normal, percentile
from switchboard.report.table import (
    TABLE_HEADER,
    empty_text,
    format_cost,
    format_table,
    legend_lines,
    report_json,
    significance_mark,
    table_cells,
)

__all__ = [
    "ALPHA",
    "FREE_VENDORS",
    "TABLE_HEADER",
    "TEST_NAME",
    "Pricing",
    "Progress",
    "ProgressCallback",
    "Report",
    "Row",
    "add_arguments",
    "build_report",
    "by_config_version",
    "empty_text",
    "format_cost",
    "format_table",
    "legend_lines",
    "llm_of",
    "load",
    "load_pricing",
    "main_report",
    "mann_whitney_p",
    "mann_whitney_p_normal",
    "parse_since",
    "percentile",
    "pricing_from_config",
    "report_json",
    "run",
    "significance_mark",
    "table_cells",
]

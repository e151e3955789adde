"""`switchboard report --html`: the page a user opens, on the fixture dataset of tests/test_report.py."""

import asyncio
import base64
import json
import re
import struct
from html.parser import HTMLParser

from switchboard.cli import main
from switchboard.core.metrics import TurnMetrics
from switchboard.report import build_report
from switchboard.report.html import report_fragment, report_page
from tests.test_report import PIPELINE, rows_of, turn, write_fixture

PRICED = PIPELINE + (
    "pricing:\n"
    "  fast/model-a: {input_per_1m: 1.0, output_per_1m: 2.0}\n"
    "  slow/model-b: {input_per_1m: 10, output_per_1m: 30}\n"
    "  espeak/en-us: {per_1m_chars: 15}\n"
)


class Page(HTMLParser):
    """What a browser would find: figures by data-chart, their images, table rows, all text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.figures: dict[str, list[dict[str, str]]] = {}
        self.rows: list[dict[str, str]] = []
        self.tables: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._figure: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        self.tags.add(tag)
        if tag == "figure":
            self._figure = a["data-chart"]
            self.figures[self._figure] = []
        elif tag == "img" and self._figure is not None:
            self.figures[self._figure].append(a)
        elif tag == "tr" and "data-vendor" in a:
            self.rows.append(a)
        elif tag == "table":
            self.tables.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def png_size(img: dict[str, str]) -> tuple[int, int, int]:
    """(width, height, bytes) of an <img>'s embedded PNG; fails unless it is one."""
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix)
    data = base64.b64decode(img["src"][len(prefix):], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height, len(data)


def test_html_report_from_the_command_line(tmp_path, capsys):
    db, config, page_path = tmp_path / "switchboard.db", tmp_path / "pipeline.yaml", tmp_path / "report.html"
    asyncio.run(write_fixture(db))
    config.write_text(PRICED)
    assert main(["report", "--db", str(db), "--since", "2025-02-15", "--config", str(config), "--json",
                 "--html", str(page_path)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)  # stdout is the JSON alone
    rows = {row["vendor"]: row for row in data["rows"]}
    # model-a: 2 turns a call × (1000 × $1/M + 50 × $2/M + 200 chars × $15/M) + a 3-char greeting / 5 calls
    assert rows["fast/model-a"]["cost_per_call"] == 0.008209
    assert rows["same/model-c"]["cost_per_call"] == 0.006 and rows["same/model-c"]["cost_partial"]
    assert f"wrote {page_path}" in err

    html = page_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    page = Page(html)
    assert "script" not in page.tags and "link" not in page.tags
    assert page.tables == [{"class": "report"}]
    assert [(r["data-source"], r["data-vendor"]) for r in page.rows] == [
        ("live", "fast/model-a"), ("live", "same/model-c"), ("live", "slow/model-b")]
    assert "significant" in page.rows[2]["class"] and "reference" in page.rows[0]["class"]
    text = page.all_text
    assert "2550/2910 *" in text and "550/910 ref" in text and "1200/1560/1641" in text
    assert "0.0082" in text and "0.0060+" in text  # $/call, the partial one marked
    assert "two-sided Mann-Whitney U on LLM TTFT against the fastest row" in text
    assert "slow/model-b (live) n=10 p=0.000183" in text and "fast/model-a (live) n=10" in text
    assert "p < 0.05" in text
    assert "since 2025-02-15T00:00:00+00:00" in text and "31 in 15 calls" in text
    assert list(page.figures) == ["latency-distribution", "waterfall", "waterfall-latest", "cost"]
    for name, images in page.figures.items():
        [img] = images
        assert img["class"] == "chart" and img["alt"]
        width, height, size = png_size(img)
        assert width >= 600 and height >= 150 and size > 5000, name


def test_fragment_escapes_text_and_has_no_document_tags():
    hostile = "evil/<script>alert('x')</script>"
    turns = rows_of([turn(hostile, 0, 1, 300), turn(hostile, 0, 2, 500), turn("ok/model", 1, 1, 400)])
    report = build_report(turns, filters={"pipeline": "<b>sales</b>", "since": None, "variant": None})
    fragment = report_fragment(report, turns, [])
    assert "<script>" not in fragment and "&lt;script&gt;" in fragment
    assert "<b>sales</b>" not in fragment and "&lt;b&gt;sales&lt;/b&gt;" in fragment
    assert fragment.startswith('<section class="switchboard-report">')
    assert "<html" not in fragment and "<head" not in fragment and "<body" not in fragment
    page = Page(fragment)
    assert {r["data-vendor"] for r in page.rows} == {hostile, "ok/model"}
    assert "cost" not in page.figures  # no prices, no cost chart
    assert all(png_size(img)[2] > 3000 for images in page.figures.values() for img in images)
    titled = report_page(report, turns, [], title="Calls <today>")
    assert "<title>Calls &lt;today&gt;</title>" in titled and fragment.split("<figure")[0] in titled


def test_an_empty_store_gives_a_page_that_says_so(tmp_path, capsys):
    db, page_path = tmp_path / "empty.db", tmp_path / "report.html"

    async def create() -> None:
        from switchboard.store import CallStore

        store = CallStore(str(db))
        await store.open()
        await store.close()

    asyncio.run(create())
    missing_config = str(tmp_path / "none.yaml")
    assert main(["report", "--db", str(db), "--html", str(page_path), "--config", missing_config]) == 0
    out, err = capsys.readouterr()
    assert out == "no turns match\n"
    assert "does not load, so costs are not estimated" in err  # a warning; the report still ran
    page = Page(page_path.read_text())
    assert "No turns yet" in page.all_text and not page.figures and not page.tables

    assert main(["report", "--db", str(db), "--html", str(tmp_path / "no" / "dir" / "r.html")]) == 1
    assert "cannot write" in capsys.readouterr().err


# --- one latency story: the table, every waterfall and the dashboard agree ----------------------------------


def timed_turn(index: int, speculative: bool, v2v_s: float) -> TurnMetrics:
    """A turn with known readings. Speculative: STT, the LLM and TTS ran during the caller's silence, before
    the endpoint (600 ms), and audio waited for it; else each stage ran after the endpoint."""
    end = 100.0
    endpoint = end + 0.6
    if speculative:
        stt_start, stt, llm, chunk, tts = end + 0.12, end + 0.35, end + 0.36, end + 0.37, end + 0.52
    else:
        stt_start, stt, llm, chunk = endpoint, endpoint + 0.2, endpoint + 0.3, endpoint + 0.31
        tts = endpoint + 0.4
    return TurnMetrics(call_id=f"c{index}", index=1, speech_start=end - 1, speech_end=end, endpoint=endpoint,
                       stt_start=stt_start, stt_done=stt, llm_first_token=llm, first_chunk=chunk,
                       tts_first_byte=tts, first_audio_sent=end + v2v_s, turn_done=end + 3,
                       vendors={"stt": "s/1", "llm": "vendor/model", "tts": "t/1"})


def test_the_table_every_waterfall_and_the_dashboard_tell_one_latency_story():
    from switchboard.core.metrics import stage_spans
    from switchboard.report.html import _median_turn, _segments, _total
    from switchboard.web.pages import waterfall

    # speculative turns answer 0.61 s after speech end; the others 1.01-1.03 s
    turns = [timed_turn(0, True, 0.61), timed_turn(1, True, 0.612), timed_turn(2, False, 1.01),
             timed_turn(3, False, 1.02), timed_turn(4, False, 1.03)]
    rows = rows_of(turns)
    (row,) = build_report(rows).rows
    assert row.v2v_p50_ms == 1010.0
    for metrics, stored in zip(turns, rows, strict=True):
        spans = _segments(stored)
        assert spans == stage_spans(stored) and _total(spans) == metrics.voice_to_voice_ms  # never the sum
        html = waterfall(stored)  # the dashboard's stored-call page
        assert f"@{metrics.voice_to_voice_ms:.0f}</small>" in html
    speculative = dict((label, (start, end)) for label, start, end in _segments(rows[0]))
    assert speculative["STT"] == (0.0, 350.0) and speculative["endpointing"] == (0.0, 600.0)  # overlapping
    assert sum(end - start for start, end in speculative.values()) > rows[0]["voice_to_voice_ms"]
    median_turn, median_spans = _median_turn(rows)
    assert _total(median_spans) == row.v2v_p50_ms == median_turn["voice_to_voice_ms"]


def test_a_broken_config_is_an_error_not_a_report_without_prices(tmp_path, capsys):
    broken = tmp_path / "pipeline.yaml"
    broken.write_text("pipelines: [\n")
    assert main(["report", "--db", str(tmp_path / "none.db"), "--config", str(broken)]) == 2
    assert "line 2, column 1" in capsys.readouterr().err

"""The dashboard's eval pages: the runs `switchboard eval` stored, one run per arm with its calls' checks.

A call store is seeded with eval calls (their turns and verdicts, as the runner stores them; no call is
placed), then read through the dashboard's JSON API and pages, and through `switchboard report --evals`:
the same summary, two renderings. A headless-Chromium check (Debian's chromium, Playwright) opens the
pages as a user would and takes screenshots (SWITCHBOARD_SCREENSHOTS=DIR keeps them).
"""

import asyncio
import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from switchboard.cli import main
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.report.evals import build_summary, format_summary, table
from switchboard.server import create_app, running
from switchboard.store import CallStore
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS
from tests.test_dashboard_browser import playwright_and_chromium

TOKEN = "eval-dashboard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
pipelines:
  default:
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
pricing:
  openai/gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.60}
"""
START = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
EVIDENCE = "caller: a table for four at seven / bot: Booked for four at 7 pm, reference K7."
MISSED = "never heard /we open at 9/"

# arm -> scenario -> each call's (passed, failing check or unjudged reason, goal score)
CALLS = {
    "default": {"book": [(True, None, 5), (True, None, 4), (True, None, 5)],
                "hours": [(True, None, 4), (False, MISSED, 2)]},
    "gpt": {"book": [(True, None, 4), (False, "not called", 2), (False, "not called", 1)],
            "hours": [(None, "the judge failed: ProviderError: 503", None), (True, None, 3)]},
}


def reply(call_id: str, index: int, v2v_ms: float, interrupted: bool = False) -> TurnMetrics:
    end = 10.0 + index * 5
    return TurnMetrics(call_id=call_id, index=index, transcript=f"line {index}", speech_start=end - 1.5,
                       speech_end=end, endpoint=end + 0.2, stt_done=end + 0.3, llm_first_token=end + 0.5,
                       first_chunk=end + 0.55, tts_first_byte=end + 0.6, first_audio_sent=end + v2v_ms / 1000,
                       turn_done=end + 3, reply_text=f"answer {index}", reply_heard=f"answer {index}",
                       interrupted=interrupted, tokens_in=800, tokens_out=40,
                       vendors={"stt": "pocketsphinx/en-us", "llm": "openai/gpt-4o-mini",
                                "tts": "espeak/en-us"})


def verdict_row(run: str, arm: str, scenario: str, call_id: str, passed: bool | None, problem: str | None,
                score: int | None) -> dict:
    checks = [{"name": "end_call true", "passed": True, "detail": "the bot ended the call"}]
    if scenario == "book":
        checks.insert(0, {"name": "tool book_table", "passed": problem is None,
                          "detail": problem or "called with {'party_size': 'four', 'time': '7 pm'}"})
    else:
        checks.append({"name": "said /we open at 9/", "passed": problem != MISSED,
                       "detail": problem if problem == MISSED else "heard: we open at 9"})
    if passed is None:
        judge = {"unjudged": problem, "attempts": 1}
    else:
        criterion = "The bot repeated the party size and the time back before booking."
        judge = {"criteria": {criterion: bool(passed)}, "attempts": 1,
                 "evidence": {criterion: EVIDENCE, "goal": f"goal evidence {call_id}"}}
    return {"run": run, "scenario": scenario, "arm": arm, "call_id": call_id, "kind": "call",
            "passed": passed, "checks": checks,
            "scores": {} if score is None else {"goal": score, "spoken_style": 4},
            "judge": judge, "judge_tokens_in": 900, "judge_tokens_out": 120, "judge_cost": 0.000207,
            "talk_over_s": 0.4 if arm == "gpt" else 0.1}


async def seed(db: str) -> None:
    store = CallStore(db)
    await store.open()
    # an earlier replay run: a recorded live call's caller replayed into "gpt"
    await store.start_call("CA-live", "default", started_at=START - timedelta(hours=2))
    await store.end_call("CA-live", {"turns": 1}, ended_at=START - timedelta(minutes=119))
    await store.start_call("CA-replayed", "gpt", started_at=START - timedelta(hours=1),
                           eval_tags={"eval_run": "r-replay", "eval_scenario": "replay"})
    await store.end_call("CA-replayed", {"turns": 1}, ended_at=START - timedelta(minutes=59))
    pairs = [{"turn": 1, "caller": "are you open on sunday", "original": "We are closed on Sundays.",
              "candidate": "Sorry, Sundays we are closed.", "preferred": "candidate", "reason": "warmer",
              "order": "candidate first"}]
    await store.add_eval_result({
        "run": "r-replay", "scenario": "replay", "arm": "gpt", "call_id": "CA-replayed", "kind": "replay",
        "passed": True, "checks": [{"name": "every replayed turn answered", "passed": True,
                                    "detail": "1 of 1 utterance(s) paired"}], "scores": {},
        "judge": {"original_call": "CA-live", "original_pipeline": "default", "win_rate": 1.0,
                  "pairs": pairs}},
        created_at=START - timedelta(hours=1))
    n = 0
    for arm, scenarios in CALLS.items():
        for scenario, calls in scenarios.items():
            for passed, problem, score in calls:
                n += 1
                call_id = f"CA-{arm}-{scenario}-{n}"
                at = START + timedelta(seconds=20 * n)
                await store.start_call(call_id, arm, started_at=at, carrier="twilio",
                                       eval_tags={"eval_run": "r-ab", "eval_scenario": scenario})
                for index in (1, 2):
                    await store.add_turn(reply(call_id, index, 900 + 100 * n + (300 if arm == "gpt" else 0),
                                               interrupted=arm == "gpt" and index == 2), created_at=at)
                await store.end_call(call_id, {"turns": 2}, ended_at=at + timedelta(seconds=15))
                row = verdict_row("r-ab", arm, scenario, call_id, passed, problem, score)
                await store.add_eval_result(row, created_at=at + timedelta(seconds=16))
    await store.close()


@pytest.fixture
def db(tmp_path) -> str:
    path = str(tmp_path / "evals.db")
    asyncio.run(seed(path))
    return path


@pytest.fixture
def client(db, monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    app = create_app(parse_config(CONFIG), providers={"default": providers()}, store_url=db)
    with TestClient(app, follow_redirects=False) as client:
        for _ in range(200):  # the server opens its store in the background
            if client.get("/api/evals", headers=AUTH).status_code != 503:
                break
            time.sleep(0.05)
        yield client


def providers() -> Providers:
    return Providers(InstantSTT("hello"), InstantLLM("Hi."), InstantTTS())


def test_the_api_lists_the_runs_and_serves_a_run_as_report_evals_json_does(client, db, tmp_path, capsys):
    assert client.get("/api/evals").status_code == 401
    assert client.get("/api/evals/r-ab").status_code == 401

    runs = client.get("/api/evals", headers=AUTH).json()["runs"]
    assert [run["run"] for run in runs] == ["r-ab", "r-replay"]  # latest first
    ab = runs[0]
    assert ab["scenarios"] == ["book", "hours"] and ab["calls"] == 10 and ab["kind"] == "call"
    assert {k: ab["overall"][k] for k in ("passed", "failed", "unjudged")} == {"passed": 6, "failed": 3,
                                                                                "unjudged": 1}
    assert ab["overall"]["rate"] == pytest.approx(6 / 9)
    assert ab["arms"]["default"]["passed"] == 4 and ab["arms"]["gpt"]["unjudged"] == 1
    assert runs[1]["kind"] == "replay"
    assert ab["started_at"].startswith("2026-12-07T20:00:36")

    served = client.get("/api/evals/r-ab", headers=AUTH).json()
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    assert main(["report", "--evals", "r-ab", "--db", db, "--json", "--config", str(config)]) == 0
    assert served == json.loads(capsys.readouterr().out)  # one summary, the same JSON

    default, gpt = served["arms"]
    assert (default["name"], default["best"], default["overall"]["passed"]) == ("default", True, 4)
    assert gpt["overall"] == {**gpt["overall"], "passed": 2, "failed": 2, "unjudged": 1}
    assert gpt["pass_p_value"] is not None and gpt["cost_per_call"] > 0  # Fisher; the dashboard's pricing
    assert gpt["interruptions_pct"] == 50.0 and default["talk_over_s"] == 0.1
    assert served["calls"][4]["checks"][1] == {"name": "said /we open at 9/", "passed": False,
                                               "detail": MISSED}
    assert client.get("/api/evals/latest", headers=AUTH).json()["run"] == "r-ab"
    missing = client.get("/api/evals/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json() == {"error": "no eval run 'nope' in the call store"}


def test_the_run_page_shows_the_report_table_and_each_calls_checks_linking_to_its_page(client, db):
    page = client.get("/dashboard/evals/r-ab")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    page = client.get("/dashboard/evals/r-ab", headers=AUTH)
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    html = page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from elsewhere

    async def rows() -> list[dict]:
        store = CallStore(db)
        await store.open()
        try:
            return await store.query_eval_results("r-ab")
        finally:
            await store.close()

    summary = build_summary("r-ab", asyncio.run(rows()), {"openai/gpt-4o-mini": {"input_per_1m": 0.15,
                                                                                 "output_per_1m": 0.60}})
    text = format_summary(summary)
    for label, cells in table(summary):  # the text report's cells, every one of them on the page
        assert label in text
        for cell in cells:
            assert f">{cell}<" in html.replace("&#x27;", "'"), (label, cell)
    assert "4/5 80% [38-96] (best)" in html and "2/4 50% [15-85]" in html  # Wilson, unjudged apart
    assert html.count('class="rate-track"') == 6  # two arms × (two scenarios and overall)
    assert 'data-arm="gpt" data-scenario="book"' in html

    assert html.count('<article class="eval-call"') == 10
    assert html.count('data-verdict="pass"') == 6 and html.count('data-verdict="unjudged"') == 1
    failed = re.search(r'<article class="eval-call" data-call-id="CA-default-hours-5".*?</article>',
                       html).group(0)
    assert '<a href="/dashboard/calls/CA-default-hours-5">CA-default-hours-5</a>' in failed
    assert ('<li class="check fail"><strong>said /we open at 9/</strong> <span class="detail">never heard'
            in failed)
    assert "unjudged: the judge failed: ProviderError: 503" in html
    assert "<q>caller: a table for four at seven / bot: Booked for four at 7 pm, reference K7.</q>" in html
    assert "gpt: 2 call(s) failed “tool book_table”" in html

    call = client.get("/dashboard/calls/CA-default-hours-5", headers=AUTH).text
    assert 'run <a href="/dashboard/evals/r-ab">r-ab</a>, scenario hours' in call

    runs = client.get("/dashboard/evals", headers=AUTH).text
    assert '<a href="/dashboard/evals/r-ab">r-ab</a>' in runs and "6/9 67% [35-88]" in runs
    assert "gpt: 2/4 50% [15-85], 1 unjudged" in runs and "(replay)" in runs
    assert '<a href="/dashboard/evals" aria-current=page>Evals</a>' in runs
    assert client.get("/dashboard/evals/nope", headers=AUTH).status_code == 404
    live = client.get("/dashboard/report?since=all", headers=AUTH).text  # eval calls are not live traffic
    assert "Live traffic only: the calls <code>switchboard eval</code> placed are under" in live

    replay = client.get("/dashboard/evals/r-replay", headers=AUTH).text
    assert "judge prefers it to the original" in replay and '<a href="/dashboard/calls/CA-live">' in replay
    assert "<td>Sorry, Sundays we are closed.</td><td>candidate</td><td>warmer</td>" in replay
    assert "later lines may no longer fit" in replay


def test_report_evals_html_is_the_same_page_standing_alone(db, tmp_path):
    out = tmp_path / "eval.html"
    assert main(["report", "--evals", "r-ab", "--db", db, "--html", str(out)]) == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html and "rate-track" in html
    assert html.count('<article class="eval-call"') == 10
    assert "<code>CA-default-hours-5</code>" in html and "/dashboard/calls/" not in html  # no server to link
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_without_a_store_the_eval_pages_say_so(monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    app = create_app(parse_config(CONFIG), providers={"default": providers()}, store_url=None)
    with TestClient(app) as client:
        assert "The call store is off" in client.get("/dashboard/evals").text
        response = client.get("/api/evals")
        assert response.status_code == 503 and "store is off" in response.json()["error"]


async def test_the_eval_pages_in_a_browser(db, tmp_path, monkeypatch):
    async_playwright, executable = playwright_and_chromium()
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    app = create_app(parse_config(CONFIG), providers={"default": providers()}, store_url=db)

    async with running(app) as port, async_playwright() as playwright:
        base = f"http://127.0.0.1:{port}"
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            await page.goto(f"{base}/dashboard/evals")
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/dashboard/evals")
            await page.click('a[href="/dashboard/evals/r-ab"]')
            await page.wait_for_url(f"{base}/dashboard/evals/r-ab")
            table = page.locator("table.evals")
            await table.wait_for()
            # the per-arm table fits a laptop screen; the styles loaded (the interval bars are drawn)
            widths = await page.evaluate(
                "() => { const t = document.querySelector('table.evals');"
                " return [t.scrollWidth, t.parentElement.clientWidth]; }")
            assert widths[0] <= widths[1] + 1, widths
            bar = await page.evaluate(
                "() => { const ci = document.querySelector('[data-arm=gpt][data-scenario=book] .ci');"
                " const r = ci.getBoundingClientRect(); return [r.width, getComputedStyle(ci).position]; }")
            assert bar[0] > 20 and bar[1] == "absolute", bar  # 1/3 passed: a wide interval, drawn
            assert "4/5 80% [38-96] (best)" in await table.inner_text()
            failed = page.locator('article.eval-call[data-call-id="CA-default-hours-5"]')
            assert await failed.locator("li.check.fail").inner_text() == f"said /we open at 9/ {MISSED}"
            shots = Path(os.environ.get("SWITCHBOARD_SCREENSHOTS") or tmp_path)
            await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(shots / "eval-run.png"), full_page=True)
            await failed.locator("a").first.click()
            await page.wait_for_url(f"{base}/dashboard/calls/CA-default-hours-5")
            await page.locator("p.eval-tag a").click()  # and back to its run
            await page.wait_for_url(f"{base}/dashboard/evals/r-ab")
            await page.goto(f"{base}/dashboard/evals")
            await page.screenshot(path=str(shots / "eval-runs.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()

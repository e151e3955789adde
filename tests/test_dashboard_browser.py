"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

A user logs in through the form, watches a simulated call's turns appear live, opens the call's page
(transcripts, waterfall, the recording plays) and the report page (the charts are real images).

Skips, saying why, when Playwright or Chromium is missing, unless SWITCHBOARD_REQUIRE_BROWSER=1
(CI sets it once it has installed chromium): then it fails instead.
"""

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

TOKEN = "browser-test-token"
LINES = ["what time is it", "is the shop open today", "thanks that is all"]
TIMEOUT_MS = 20_000


def need(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("SWITCHBOARD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (and SWITCHBOARD_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def playwright_and_chromium():
    """Playwright's `async_playwright` and Debian's Chromium, or a skip (a failure with
    SWITCHBOARD_REQUIRE_BROWSER=1) naming what is missing."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    need(async_playwright is not None, "Playwright is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    need(executable is not None, "Chromium is not installed (apt-get install chromium)")
    return async_playwright, executable


class LinesSTT(InstantSTT):
    """Hears each caller line as the next of `texts`."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__(texts[0])
        self.texts = texts

    async def transcribe(self, pcm):
        self.text = self.texts[min(len(self.heard), len(self.texts) - 1)]
        return await super().transcribe(pcm)


async def test_dashboard_shows_a_live_call_its_page_and_the_report_charts(tmp_path, speech_wav, monkeypatch):
    async_playwright, executable = playwright_and_chromium()

    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    config = parse_config(f"""
pipelines:
  default:
    greeting: "Hi there."
    record: true
    recordings_dir: {tmp_path / "recordings"}
    stt: {{provider: pocketsphinx}}
    llm: {{provider: scripted}}
    tts: {{provider: espeak}}
""")
    providers = Providers(LinesSTT(LINES), InstantLLM("Sure thing."), InstantTTS(ms_per_char=40))
    app = create_app(config, providers={"default": providers}, store_url=str(tmp_path / "calls.db"))

    async with running(app) as port, async_playwright() as playwright:
        base = f"http://127.0.0.1:{port}"
        browser = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # The dashboard sends us to the login form; the token takes us back.
            await page.goto(f"{base}/dashboard")
            assert "/login" in page.url
            await page.fill("#token", TOKEN)
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/dashboard")
            await page.wait_for_function(
                "() => document.querySelector('#live-status').textContent === 'live'")

            async def watch() -> tuple[int, list[str]]:
                # Each caller line shows up in the live call's card once its turn is done.
                for text in LINES:
                    await page.wait_for_function(
                        "text => [...document.querySelectorAll('#live-calls article.call p.caller')]"
                        ".some(p => p.textContent.includes(text))", arg=text)
                return (await page.locator("#live-calls .wf-bar").count(),
                        await page.locator("#live-calls p.bot").all_inner_texts())

            result, (live_bars, bot_lines) = await asyncio.gather(
                run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav) for _ in LINES],
                         hangup_timeout_s=3, on_event=lambda event: None),
                watch())
            assert live_bars >= len(LINES) * 3  # a waterfall per answered turn
            assert any("Sure thing." in line for line in bot_lines)

            # When it ends, it moves to the recent calls, linking to its page.
            link = page.locator(f'#recent-calls a[href="/dashboard/calls/{result.call_sid}"]')
            await link.wait_for()
            assert await page.locator("#live-calls article.call").count() == 0
            row = page.locator(f'#recent-calls tr[data-call-id="{result.call_sid}"]')
            assert "recorded" in await row.inner_text()
            await link.click()
            await page.wait_for_url(f"{base}/dashboard/calls/{result.call_sid}")
            for text in LINES:
                assert await page.locator("p.caller", has_text=text).count() == 1
            assert await page.locator(".waterfall .wf-bar").count() >= len(LINES) * 3
            assert "instant/echo" in await page.locator("table.vendors").inner_text()
            # the recording loads and has a duration (the WAV is written when the call closes)
            await page.wait_for_function("() => { const a = document.querySelector('audio');"
                                         " return a && a.readyState >= 1 && a.duration > 1; }")

            await page.set_viewport_size({"width": 1280, "height": 900})  # a laptop screen
            await page.goto(f"{base}/dashboard/report?since=1h")
            table = page.locator("table.report")
            await table.wait_for()
            # the whole table is visible, cost columns included: no horizontal scrolling inside its box
            widths = await page.evaluate(
                "() => { const t = document.querySelector('table.report');"
                " return [t.scrollWidth, t.parentElement.clientWidth,"
                " [...t.querySelectorAll('tr:first-child th')].map(th => th.offsetWidth)]; }")
            assert widths[0] <= widths[1] + 1, widths
            assert "instant/echo" in await table.inner_text()
            for chart in ("latency-distribution", "waterfall"):
                await page.locator(f'figure[data-chart="{chart}"] img.chart').first.wait_for()
            await page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('img.chart')];"
                " return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }")
            shots = Path(os.environ.get("SWITCHBOARD_SCREENSHOTS") or tmp_path)  # set it to look at them
            await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
            await page.screenshot(path=str(shots / "report.png"), full_page=True)
            await page.goto(f"{base}/dashboard")
            await page.locator("form.dial").wait_for()  # the "place a call" form
            await page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
            assert errors == []
        finally:
            await browser.close()

"""The dashboard without a browser: token auth, the JSON API after a real simulated call, the live event
stream, recordings, and the live hub's handling of slow browsers."""

import asyncio
import contextlib
import json
import logging

import httpx2
import pytest
from starlette.testclient import TestClient

from switchboard.caller import CallerLine, run_call
from switchboard.config import parse_config
from switchboard.core.metrics import TurnMetrics
from switchboard.pipeline.call import Providers
from switchboard.server import create_app, running
from switchboard.web.auth import COOKIE, Auth
from switchboard.web.dashboard import Dashboard
from switchboard.web.live import LiveHub
from switchboard.web.pages import waterfall
from tests.fakes.instant import InstantLLM, InstantSTT, InstantTTS

pytestmark = pytest.mark.timescale()  # in-process calls on instant/fake providers: tests/timescale.py

TOKEN = "s3cret-dashboard-token"
CONFIG = """
pipelines:
  default:
    greeting: "Hi there."
    stt: {provider: pocketsphinx}
    llm: {provider: scripted}
    tts: {provider: espeak}
"""


def providers() -> dict[str, Providers]:
    return {"default": Providers(InstantSTT("what time is it"), InstantLLM("It is noon."), InstantTTS())}


def make_app(config: str = CONFIG, store_url: str | None = None):
    return create_app(parse_config(config), providers=providers(), store_url=store_url)


# --- auth ---------------------------------------------------------------------------------------------------


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    with TestClient(make_app(), follow_redirects=False) as client:
        yield client


def test_without_the_token_apis_answer_401_json_and_pages_go_to_login(client):
    response = client.get("/api/calls")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
    for path in ("/api/live", "/api/report", "/api/calls/x", "/api/calls/x/recording"):
        assert client.get(path).status_code == 401, path
    page = client.get("/dashboard/report?since=7d")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fdashboard%2Freport%3Fsince%3D7d"
    assert client.get("/dashboard").headers["location"] == "/login?next=%2Fdashboard"


def test_bearer_token_opens_the_api_and_the_pages_a_wrong_one_does_not(client):
    assert client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"}).json()["store"] == "off"
    page = client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and "Live calls" in page.text
    assert "The call store is off" in page.text
    assert client.get("/api/calls", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/dashboard", headers={"Authorization": "Bearer nope"}).status_code == 303


def test_login_form_sets_a_cookie_that_works_and_does_not_hold_the_token(client):
    form = client.get("/login?next=/dashboard/report")
    assert form.status_code == 200 and 'name="token"' in form.text
    assert 'value="/dashboard/report"' in form.text

    wrong = client.post("/login", data={"token": "guess", "next": "/dashboard"})
    assert wrong.status_code == 401 and "Wrong token." in wrong.text and COOKIE not in wrong.cookies
    assert "set-cookie" not in wrong.headers

    good = client.post("/login", data={"token": TOKEN, "next": "/dashboard/report"})
    assert good.status_code == 303 and good.headers["location"] == "/dashboard/report"
    set_cookie = good.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie
    assert "samesite=strict" in set_cookie.lower() and "Secure" not in set_cookie  # plain http here
    assert TOKEN not in set_cookie
    cookie = good.cookies[COOKIE]

    def with_cookie(method: str, path: str, value: str, **kwargs):
        client.cookies.clear()
        client.cookies.set(COOKIE, value)
        return client.request(method, path, **kwargs)

    assert with_cookie("GET", "/dashboard", cookie).status_code == 200
    assert with_cookie("GET", "/api/calls", cookie).status_code == 200
    assert with_cookie("GET", "/api/calls", cookie + "x").status_code == 401
    # the cookie opens the dashboard, not the call-placing API
    assert with_cookie("POST", "/api/calls", cookie, json={"to": "+15550001111"}).status_code == 401

    logout = with_cookie("POST", "/logout", cookie)
    assert logout.status_code == 303 and f'{COOKIE}=""' in logout.headers["set-cookie"]
    assert with_cookie("GET", "/api/calls", cookie).status_code == 401  # revoked: a copy opens nothing
    # every login is a session of its own
    client.cookies.clear()
    first = client.post("/login", data={"token": TOKEN}).cookies[COOKIE]
    client.cookies.clear()
    second = client.post("/login", data={"token": TOKEN}).cookies[COOKIE]
    assert first != second and with_cookie("GET", "/api/calls", first).status_code == 200


def test_logins_from_an_address_that_keeps_guessing_are_refused(client):
    for _ in range(10):
        assert client.post("/login", data={"token": "guess"}).status_code == 401
    refused = client.post("/login", data={"token": TOKEN})  # even the right one, until the window passes
    assert refused.status_code == 429 and "Too many wrong tokens" in refused.text
    assert int(refused.headers["retry-after"]) > 0 and COOKIE not in refused.cookies
    # the bearer header (for scripts) is not a login: it still works
    assert client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_login_cookie_is_secure_behind_https_and_next_stays_on_this_server(client):
    response = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"},
                           headers={"X-Forwarded-Proto": "https"})
    assert response.headers["location"] == "/dashboard"
    assert "Secure" in response.headers["set-cookie"]


def test_without_a_token_the_dashboard_is_open_and_says_so_once_at_start_up(monkeypatch, caplog):
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="switchboard.web"):
        app = make_app()
    warnings = [r.getMessage() for r in caplog.records if "dashboard" in r.getMessage()]
    assert len(warnings) == 1 and "SWITCHBOARD_API_TOKEN" in warnings[0]
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/dashboard").status_code == 200
        assert client.get("/api/calls").json() == {"calls": [], "store": "off", "note": (
            "The call store is off (no database_url / store_url): only live calls are shown.")}
        assert client.post("/api/calls", json={"to": "+1555"}).status_code == 403  # still off


def test_the_token_is_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG), TestClient(make_app(), follow_redirects=False) as client:
        client.post("/login", data={"token": TOKEN + "-wrong"})
        client.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert caplog.records and not any(TOKEN in r.getMessage() for r in caplog.records)


# --- a real call --------------------------------------------------------------------------------------------


async def read_events(response: httpx2.Response, events: list[dict]) -> None:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))


async def wait_for(predicate, what: str, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (server state, no event to wait on)
            await asyncio.sleep(0.05)
    assert predicate(), what


async def test_a_call_is_streamed_live_then_listed_and_served_by_the_api(tmp_path, speech_wav, monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", TOKEN)
    app = make_app(store_url=str(tmp_path / "calls.db"))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    events: list[dict] = []
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                                        headers=headers, timeout=10) as http:
        async with http.stream("GET", "/api/live") as live:
            assert live.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(read_events(live, events))
            await wait_for(lambda: events, "the snapshot")
            assert events[0] == {"type": "snapshot", "calls": []}
            result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                    hangup_timeout_s=1, on_event=lambda event: None)
            call_id = result.call_sid
            await wait_for(lambda: any(e["type"] == "call_ended" for e in events), "call_ended")
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await wait_for(lambda: not app.state.live_hub.subscribers, "the stream's subscriber to go")

        kinds = [e["type"] for e in events]
        assert kinds[:2] == ["snapshot", "call_started"] and kinds[-1] == "call_ended"
        assert events[1]["call"]["id"] == call_id and events[1]["call"]["pipeline"] == "default"
        turns = [e["turn"] for e in events if e["type"] == "turn"]
        assert all(e["call_id"] == call_id for e in events[2:])
        assert [t["kind"] for t in turns] == ["greeting", "reply"]
        assert turns[1]["transcript"] == "what time is it" and turns[1]["reply_heard"] == "It is noon."
        assert turns[1]["voice_to_voice_ms"] > 0 and turns[1]["llm_vendor"] == "instant/echo"
        assert events[-1]["summary"]["turns"] == 2

        await wait_for(lambda: app.state.live_hub.calls == {}, "the call to leave the hub")
        listed = (await http.get("/api/calls")).json()
        async with asyncio.timeout(10):  # a regression fails here instead of hanging
            while not listed["calls"] or listed["calls"][0]["ended_at"] is None:  # the writer is async
                await asyncio.sleep(0.05)
                listed = (await http.get("/api/calls")).json()
        [call] = listed["calls"]
        assert call["id"] == call_id and call["live"] is False and call["pipeline"] == "default"
        assert call["summary"]["turns"] == 2 and call["has_recording"] is False and "recording" not in call
        assert (await http.get("/api/calls?pipeline=other")).json()["calls"] == []
        bad = await http.get("/api/calls?limit=lots")
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
        assert (await http.get("/api/calls?since=soon")).status_code == 400

        detail = (await http.get(f"/api/calls/{call_id}")).json()
        assert [t["transcript"] for t in detail["turns"]] == ["", "what time is it"]
        assert detail["turns"][1]["reply_heard"] == "It is noon." and detail["shadows"] == []
        assert (await http.get("/api/calls/CAnope")).status_code == 404

        assert (await http.get(f"/api/calls/{call_id}/recording")).status_code == 404  # not recorded
        assert (await http.get("/api/calls/CAnope/recording")).status_code == 404

        report = (await http.get("/api/report?since=1h")).json()
        assert [row["vendor"] for row in report["rows"]] == ["instant/echo"]
        assert report["rows"][0]["calls"] == 1 and report["filters"]["since"]

        page = await http.get(f"/dashboard/calls/{call_id}")
        assert page.status_code == 200
        assert "what time is it" in page.text and "It is noon." in page.text
        assert "instant/echo" in page.text and "no recording for this call" in page.text
        assert 'class="wf-bar"' in page.text and "LLM first token" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        dashboard = await http.get("/dashboard")
        assert f'href="/dashboard/calls/{call_id}"' in dashboard.text


async def test_a_recorded_call_serves_its_wav_and_nothing_else(tmp_path, speech_wav, monkeypatch):
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    config = CONFIG + f"    record: true\n    recordings_dir: {tmp_path / 'rec'}\n"
    app = make_app(config, store_url=str(tmp_path / "calls.db"))
    async with running(app) as port, httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        result = await run_call(f"ws://127.0.0.1:{port}/media-stream", [CallerLine(wav=speech_wav)],
                                hangup_timeout_s=1, on_event=lambda event: None)
        detail: dict = {}
        async with asyncio.timeout(10):
            while not detail.get("has_recording"):
                await asyncio.sleep(0.05)
                detail = (await http.get(f"/api/calls/{result.call_sid}")).json()
        assert "recording" not in detail["summary"] and str(tmp_path) not in json.dumps(detail)
        listed = (await http.get("/api/calls")).json()
        assert listed["calls"][0]["has_recording"] and str(tmp_path) not in json.dumps(listed)
        wav = await http.get(f"/api/calls/{result.call_sid}/recording")
        assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
        assert wav.content[:4] == b"RIFF" and len(wav.content) > 8000
        page = await http.get(f"/dashboard/calls/{result.call_sid}")
        audio = f'<audio controls preload="metadata" src="/api/calls/{result.call_sid}/recording">'
        assert audio in page.text
        assert (await http.get("/api/calls/..%2F..%2Fetc%2Fpasswd/recording")).status_code == 404


# --- the live hub -------------------------------------------------------------------------------------------


async def test_a_slow_browser_loses_its_backlog_and_gets_a_fresh_snapshot_instead():
    hub = LiveHub(max_queue=3)
    slow = hub.subscribe()
    hub.call_started("CA1", "default", from_number="+1")
    for index in range(10):  # never blocks, however far behind the subscriber is
        hub.turn(TurnMetrics(call_id="CA1", index=index, transcript=f"line {index}"))
    assert slow.lagged and slow.queue.qsize() == 1
    snapshot = await slow.next()
    assert snapshot["type"] == "snapshot" and not slow.lagged
    [call] = snapshot["calls"]
    assert [t["transcript"] for t in call["turns"]] == [f"line {i}" for i in range(10)]
    hub.call_ended("CA1", {"turns": 10})
    assert await slow.next() == {"type": "call_ended", "call_id": "CA1",
                                 "summary": {"turns": 10, "has_recording": False}}
    assert hub.snapshot()["calls"] == []
    hub.unsubscribe(slow)
    assert not hub.subscribers


async def test_the_event_stream_beats_while_idle_and_ends_when_the_hub_closes():
    hub = LiveHub()
    events = Dashboard(hub, Auth(None), None, heartbeat_s=0.05)._events()
    first = await anext(events)
    assert first.startswith("retry: 2000\n") and json.loads(first.split("data: ", 1)[1]) == {
        "type": "snapshot", "calls": []}
    assert await anext(events) == ": heartbeat\n\n" and len(hub.subscribers) == 1
    hub.call_started("CA9", "default")
    assert json.loads((await anext(events))[6:])["call"]["id"] == "CA9"
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert not hub.subscribers

    # each stream ends after max_stream_s (the browser reconnects), so none holds a shutdown up for long
    short = Dashboard(LiveHub(), Auth(None), None, heartbeat_s=10, max_stream_s=0.05)._events()
    await anext(short)
    with pytest.raises(StopAsyncIteration):
        await anext(short)


def test_the_waterfall_overlaps_work_done_while_the_endpoint_waited():
    """Speculative STT/LLM can finish before the endpoint: those bars start at speech end, not after."""
    html = waterfall({"endpoint_ms": 600.0, "stt_done_ms": 160.0, "llm_first_token_ms": 300.0,
                      "first_chunk_ms": 320.0, "tts_first_byte_ms": 400.0, "first_audio_sent_ms": 610.0})
    assert 'title="STT: 0 → 160 ms"' in html and 'title="LLM first token: 160 → 300 ms"' in html
    assert 'title="first audio: 400 → 610 ms"' in html
    assert ">160 ms <small>@160</small>" in html  # how long STT took, never a negative duration
    assert "no timings" in waterfall({"kind": "greeting"})


def test_guesses_from_very_many_addresses_keep_the_lockout_table_bounded(monkeypatch):
    from switchboard.web import auth

    monkeypatch.setattr(auth, "TRACKED_ADDRESSES", 50)
    guard = auth.Auth("s3cret", "SWITCHBOARD_API_TOKEN")
    for n in range(500):
        guard._note_failure(f"10.0.{n // 256}.{n % 256}")
    for _ in range(9):
        guard._note_failure("10.0.1.243")  # the newest keeps its count
    assert len(guard._failures) == 50 and "10.0.0.0" not in guard._failures
    assert guard._locked_out("10.0.1.243") > 0


def test_a_calls_page_shows_its_tools_transfer_and_voicemail():
    from switchboard.web.pages import call_page

    summary = {"turns": 2, "transferred_to": "sip:desk@example.com", "answered_by": "human",
               "context_error": "timed out after 2 s"}
    call = {"id": "CA1", "pipeline": "default", "summary": summary,
            "turns": [{"index": 1, "kind": "reply", "transcript": "book a table", "reply_heard": "Booked.",
                       "tools_used": ["book_table:invalid", "book_table:ok"], "tool_ms": 212.4}]}
    html = call_page(call, live=False, has_recording=False, logout=False)
    assert "tools: book_table:invalid, book_table:ok (212 ms in all)" in html
    assert "<th>transferred to</th><td>sip:desk@example.com</td>" in html
    assert "<th>answered by</th><td>human</td>" in html
    assert "<th>context webhook</th><td>timed out after 2 s</td>" in html
    assert "<th>voicemail</th>" not in html  # not a voicemail: no row

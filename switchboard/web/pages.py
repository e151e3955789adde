"""The dashboard's server-rendered HTML: plain f-strings, every value through `html.escape`.

The per-turn waterfall is drawn here for stored calls and by web/static/dashboard.js for live ones, from
the same spans (`core.metrics.stage_spans`; the live feed sends them with each turn).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from switchboard.core.metrics import stage_spans

SINCE_CHOICES = (("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"), ("all", "all time"))


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(value: datetime | str | None) -> str:
    """UTC wall time as 'YYYY-MM-DD HH:MM:SS'."""
    if value is None:
        return "-"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[:19].replace("T", " ")


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def layout(title: str, body: str, *, active: str = "", logout: bool = False, script: bool = False,
           css: Sequence[str] = ()) -> str:
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == active else ""}>{label}</a>'
        for key, href, label in (("live", "/dashboard", "Live"), ("report", "/dashboard/report", "Report"),
                                 ("evals", "/dashboard/evals", "Evals"))
    )
    if logout:
        nav += ('<form method="post" action="/logout" class="logout">'
                '<button type="submit">Log out</button></form>')
    js = '<script src="/dashboard/static/dashboard.js" defer></script>' if script else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · Switchboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/static/dashboard.css">{"".join(
    f'<link rel="stylesheet" href="/dashboard/static/{name}">' for name in css)}{js}</head>
<body><header class="top"><strong>Switchboard</strong><nav>{nav}</nav></header>
<main>{body}</main></body></html>
"""


def waterfall(turn: dict[str, Any]) -> str:
    """The turn's stages as bars on one time axis (0 = end of the caller's speech): core.metrics' spans."""
    bars = stage_spans(turn)
    if not bars:
        return '<p class="waterfall none">no timings (no caller speech in this turn)</p>'
    scale = max(max(end for _, _, end in bars), 1.0)
    rows = []
    for label, start, end in bars:
        left = max(0.0, start) / scale * 100
        width = max((end - start) / scale * 100, 0.5)
        rows.append(
            f'<div class="wf-row"><span class="wf-label">{esc(label)}</span>'
            f'<span class="wf-track"><span class="wf-bar" style="margin-left:{left:.2f}%;width:{width:.2f}%" '
            f'title="{esc(label)}: {start:.0f} → {end:.0f} ms"></span></span>'
            f'<span class="wf-ms">{end - start:.0f} ms <small>@{end:.0f}</small></span></div>')
    return f'<div class="waterfall" role="img" aria-label="stage timings">{"".join(rows)}</div>'


def turn_item(turn: dict[str, Any], shadows: Sequence[dict[str, Any]] = ()) -> str:
    said = turn.get("transcript") or ""
    heard = turn.get("reply_heard") or ""
    reply_text = turn.get("reply_text") or ""
    flags = [flag for flag, on in (("interrupted", turn.get("interrupted")), ("ended the call",
             turn.get("ended_call"))) if on]
    parts = [f'<li class="turn" data-index="{esc(turn.get("index"))}">',
             f'<div class="turn-head">#{esc(turn.get("index"))} · {esc(turn.get("kind"))}'
             f'{"".join(f" · <em>{esc(f)}</em>" for f in flags)}'
             f' · voice-to-voice <strong>{ms(turn.get("voice_to_voice_ms"))}</strong></div>']
    if said:
        parts.append(f'<p class="caller"><span>caller</span> {esc(said)}</p>')
    parts.append(f'<p class="bot"><span>bot</span> {esc(heard) or "<em>(nothing heard)</em>"}</p>')
    if reply_text and reply_text != heard:
        parts.append(f'<p class="unheard">full reply: {esc(reply_text)}</p>')
    vendors = [f"{stage}: {turn.get(f'{stage}_vendor')}" for stage in ("stt", "llm", "tts")
               if turn.get(f"{stage}_vendor")]
    if vendors:
        parts.append(f'<p class="vendors">{esc(" · ".join(vendors))}</p>')
    if turn.get("tools_used"):
        parts.append(f'<p class="tools">tools: {esc(", ".join(turn["tools_used"]))} '
                     f'({ms(turn.get("tool_ms"))} in all)</p>')
    if turn.get("error"):
        parts.append(f'<p class="error">error: {esc(turn["error"])}</p>')
    for failure in turn.get("failures") or []:
        parts.append(f'<p class="failure">provider failure: {esc(failure)}</p>')
    parts.append(waterfall(turn))
    for shadow in shadows:
        outcome = f"error: {shadow['error']}" if shadow.get("error") else shadow.get("text") or ""
        parts.append(f'<p class="shadow">shadow {esc(shadow.get("name"))} ({esc(shadow.get("vendor"))}): '
                     f'TTFT {ms(shadow.get("ttft_ms"))}, total {ms(shadow.get("total_ms"))} — '
                     f'{esc(outcome)}</p>')
    parts.append("</li>")
    return "".join(parts)


def call_link(call_id: str) -> str:
    return f'<a href="/dashboard/calls/{quote(call_id, safe="")}">{esc(call_id)}</a>'


def calls_rows(calls: Iterable[dict[str, Any]]) -> str:
    rows = []
    for call in calls:
        summary = call.get("summary") or {}
        rows.append(
            f'<tr data-call-id="{esc(call["id"])}"><td>{esc(when(call.get("started_at")))}</td>'
            f'<td>{call_link(call["id"])}</td><td>{esc(call.get("pipeline"))}</td>'
            f'<td>{esc(call.get("variant") or "")}</td><td>{esc(call.get("from_number") or "")}</td>'
            f'<td class="num">{esc(summary.get("turns", ""))}</td>'
            f'<td class="num">{ms(summary.get("voice_to_voice_ms_median"))}</td>'
            f'<td class="num">{esc(summary.get("errors", ""))}</td>'
            f'<td>{call_state(call, summary)}</td></tr>')
    return "".join(rows)


def call_state(call: dict[str, Any], summary: dict[str, Any]) -> str:
    if call.get("live"):
        return "live"
    if summary.get("outcome") == "lost":
        return "lost (server stopped)"
    return "recorded" if call.get("recording") else ""


CALLS_HEAD = ("<thead><tr><th>started (UTC)</th><th>call</th><th>pipeline</th><th>variant</th><th>from</th>"
              "<th>turns</th><th>v2v median</th><th>errors</th><th></th></tr></thead>")


def dial_form(pipelines: Sequence[str], note: str = "", error: str = "", to: str = "",
              carriers: Sequence[str] = ("twilio",)) -> str:
    """"Place a call": the number, the pipeline, the carrier, and the API token (a dashboard session alone
    can't dial)."""
    options = "".join(f'<option value="{esc(name)}">{esc(name)}</option>' for name in pipelines)
    through = "".join(f'<option value="{esc(name)}">{esc(name)}</option>' for name in carriers)
    shown = (f'<p class="error" role="alert">{esc(error)}</p>' if error else
             f'<p class="note" role="status">{esc(note)}</p>' if note else "")
    return f"""
<section id="dial"><h2>Place a call</h2>
<form method="post" action="/dashboard/dial" class="dial">
  <label>Number <input name="to" type="tel" placeholder="+15551234567" value="{esc(to)}" required></label>
  <label>Pipeline <select name="pipeline">{options}</select></label>
  <label>Carrier <select name="carrier">{through}</select></label>
  <label>From <input name="from" type="tel" placeholder="default: the carrier's FROM_NUMBER"></label>
  <label>API token <input name="token" type="password" autocomplete="off" required></label>
  <button type="submit">Call</button>
</form>{shown}</section>"""


def talk_section(pipelines: Mapping[str, Sequence[str]]) -> str:
    """"Talk to it": a browser call to each pipeline (and to each arm of a split), run by static/talk.js."""
    rows = []
    for name, arms in pipelines.items():
        buttons = [f'<button type="button" class="talk" data-pipeline="{esc(name)}">'
                   f'{"Talk to it (arm drawn)" if arms else "Talk to it"}</button>']
        buttons += [f'<button type="button" class="talk" data-pipeline="{esc(name)}" data-arm="{esc(arm)}">'
                    f'arm {esc(arm)}</button>' for arm in arms]
        rows.append(f'<li><span class="pipeline">{esc(name)}</span> {" ".join(buttons)}</li>')
    keys = "".join(f'<button type="button" data-key="{key}">{key}</button>' for key in "123456789*0#")
    return f"""
<section id="talk"><h2>Talk to it</h2>
<p class="note">A call from this browser's microphone, on the same call engine as a phone call (recorded
with carrier <code>webrtc</code>). Headphones keep the bot from hearing itself.</p>
<ul class="talk-pipelines">{"".join(rows)}</ul>
<div id="talk-call" hidden>
  <p><span id="talk-status" role="status"></span> <span id="talk-meters"><span class="meter" id="talk-mic"
  title="your microphone"></span> you <span class="meter" id="talk-bot" title="the bot"></span> bot</span></p>
  <ol id="talk-transcript" aria-live="polite"></ol>
  <div class="keypad" aria-label="keypad">{keys}</div>
  <button type="button" id="talk-hangup">Hang up</button>
  <audio id="talk-audio" autoplay></audio>
</div>
<script src="/dashboard/static/talk.js" defer></script></section>"""


def dashboard_page(recent: list[dict[str, Any]] | None, store_note: str, logout: bool, dial: str = "",
                   talk: str = "") -> str:
    recent_html = (f'<p class="note">{esc(store_note)}</p>' if recent is None else
                   f'<table class="calls">{CALLS_HEAD}<tbody id="recent-calls">{calls_rows(recent)}</tbody>'
                   f'</table>' + ("" if recent else '<p class="empty" id="no-recent">No calls yet.</p>'))
    body = f"""
<section id="live"><h1>Live calls <small id="live-status">connecting…</small></h1>
<div id="live-calls"><p class="empty">No calls right now.</p></div></section>
{talk}<section id="recent"><h2>Recent calls</h2>{recent_html}</section>{dial}"""
    return layout("Live", body, active="live", logout=logout, script=True)


def call_page(call: dict[str, Any], live: bool, has_recording: bool, logout: bool) -> str:
    call_id = call["id"]
    summary = call.get("summary") or {}
    turns = call.get("turns") or []
    shadows: dict[int, list[dict[str, Any]]] = {}
    for shadow in call.get("shadows") or []:
        shadows.setdefault(shadow.get("turn_index"), []).append(shadow)
    facts = [("pipeline", call.get("pipeline")), ("variant", call.get("variant")),
             ("carrier", call.get("carrier")), ("from", call.get("from_number") or call.get("from")),
             ("to", call.get("to_number") or call.get("to")), ("started (UTC)", when(call.get("started_at"))),
             ("ended (UTC)", "in progress" if live else when(call.get("ended_at"))),
             ("outcome", summary.get("outcome")), ("note", summary.get("note")),
             ("turns", summary.get("turns", len(turns))),
             ("voice-to-voice median", ms(summary.get("voice_to_voice_ms_median"))),
             ("voice-to-voice max", ms(summary.get("voice_to_voice_ms_max"))),
             ("interruptions", summary.get("interrupted")), ("errors", summary.get("errors")),
             ("transferred to", summary.get("transferred_to")), ("answered by", summary.get("answered_by")),
             ("voicemail", summary.get("voicemail")), ("context webhook", summary.get("context_error"))]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts
                         if v not in (None, ""))
    vendors = []
    for stage in ("stt", "llm", "tts"):
        used = sorted({t[f"{stage}_vendor"] for t in turns if t.get(f"{stage}_vendor")})
        vendors.append(f"<tr><th>{stage.upper()}</th><td>{esc(', '.join(used) or '-')}</td></tr>")
    errors = [f"turn {t.get('index')}: {t['error']}" for t in turns if t.get("error")]
    errors += [f"turn {t.get('index')}: {f}" for t in turns for f in t.get("failures") or []]
    errors_html = ("<ul class=errors>" + "".join(f"<li>{esc(e)}</li>" for e in errors) + "</ul>"
                   if errors else "<p>none</p>")
    audio = (f'<audio controls preload="metadata" src="/api/calls/{quote(call_id, safe="")}/recording">'
             f'</audio>' if has_recording else "<p>no recording for this call</p>")
    live_note = ('<p class="note">This call is in progress: <a href="/dashboard">watch it live</a>.</p>'
                 if live else "")
    if call.get("eval_run"):
        run = call["eval_run"]
        live_note += (f'<p class="note eval-tag">Placed by <code>switchboard eval</code>: run '
                      f'<a href="/dashboard/evals/{quote(run, safe="")}">{esc(run)}</a>, '
                      f'scenario {esc(call.get("eval_scenario"))}.</p>')
    items = "".join(turn_item(turn, shadows.get(turn.get("index"), ())) for turn in turns)
    body = f"""<h1>Call {esc(call_id)}</h1>{live_note}
<div class="facts"><table class="facts">{facts_html}</table>
<table class="facts vendors"><caption>vendors per stage</caption>{"".join(vendors)}</table></div>
<section><h2>Recording</h2>{audio}</section>
<section><h2>Errors</h2>{errors_html}</section>
<section><h2>Turns</h2><ol class="turns">{items or "<li>no turns recorded</li>"}</ol></section>"""
    return layout(f"Call {call_id}", body, logout=logout)


def report_form(since: str, pipeline: str, variant: str, pipelines: Sequence[str]) -> str:
    since_options = "".join(f'<option value="{v}"{" selected" if v == since else ""}>{esc(label)}</option>'
                            for v, label in SINCE_CHOICES)
    pipeline_options = '<option value="">all pipelines</option>' + "".join(
        f'<option value="{esc(p)}"{" selected" if p == pipeline else ""}>{esc(p)}</option>'
        for p in pipelines)
    return f"""<form class="filters" method="get" action="/dashboard/report">
<label>time range <select name="since">{since_options}</select></label>
<label>pipeline <select name="pipeline">{pipeline_options}</select></label>
<label>variant <input name="variant" value="{esc(variant)}" placeholder="any"></label>
<button type="submit">Show</button></form>"""


def report_page(form: str, content: str, logout: bool) -> str:
    body = (f'<h1>Vendor comparison</h1>{form}<section id="report">{content}</section>'
            '<p class="note">Live traffic only: the calls <code>switchboard eval</code> placed are under '
            '<a href="/dashboard/evals">Evals</a>.</p>')
    return layout("Report", body, active="report", logout=logout, css=["report.css"])


def message_page(title: str, message: str, logout: bool) -> str:
    return layout(title, f"<h1>{esc(title)}</h1><p>{esc(message)}</p>", logout=logout)

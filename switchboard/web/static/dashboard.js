// Switchboard's live view: follows /api/live (Server-Sent Events) and draws each active call's turns
// with their stage waterfall. No dependencies. Each turn carries its spans (core/metrics.py's stage_spans).
"use strict";
(() => {
  const liveEl = document.getElementById("live-calls");
  const statusEl = document.getElementById("live-status");
  if (!liveEl) return;
  const cards = new Map(); // call id -> {call, el}

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }
  const ms = (v) => (v === null || v === undefined ? "-" : `${Math.round(v)} ms`);
  const time = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "-");
  const callHref = (id) => `/dashboard/calls/${encodeURIComponent(id)}`;

  function waterfall(turn) {
    const bars = turn.spans || []; // [label, start ms, end ms]: core/metrics.py's stage_spans
    if (!bars.length) return el("p", { class: "waterfall none" }, "no timings (no caller speech in this turn)");
    const scale = Math.max(1, ...bars.map((b) => b[2]));
    const box = el("div", { class: "waterfall", role: "img", "aria-label": "stage timings" });
    for (const [label, start, end] of bars) {
      const bar = el("span", { class: "wf-bar", title: `${label}: ${Math.round(start)} → ${Math.round(end)} ms` });
      bar.style.marginLeft = `${(Math.max(0, start) / scale) * 100}%`;
      bar.style.width = `${Math.max(((end - start) / scale) * 100, 0.5)}%`;
      box.append(el("div", { class: "wf-row" },
        el("span", { class: "wf-label" }, label),
        el("span", { class: "wf-track" }, bar),
        el("span", { class: "wf-ms" }, `${Math.round(end - start)} ms `, el("small", {}, `@${Math.round(end)}`))));
    }
    return box;
  }

  function turnItem(turn) {
    const flags = [];
    if (turn.interrupted) flags.push(" · interrupted");
    if (turn.ended_call) flags.push(" · ended the call");
    const item = el("li", { class: "turn", "data-index": String(turn.index) },
      el("div", { class: "turn-head" }, `#${turn.index} · ${turn.kind}${flags.join("")} · voice-to-voice `,
        el("strong", {}, ms(turn.voice_to_voice_ms))));
    if (turn.transcript) item.append(el("p", { class: "caller" }, el("span", {}, "caller"), " ", turn.transcript));
    item.append(el("p", { class: "bot" }, el("span", {}, "bot"), " ", turn.reply_heard || "(nothing heard)"));
    const vendors = ["stt", "llm", "tts"].filter((s) => turn[`${s}_vendor`]).map((s) => `${s}: ${turn[`${s}_vendor`]}`);
    if (vendors.length) item.append(el("p", { class: "vendors" }, vendors.join(" · ")));
    if (turn.error) item.append(el("p", { class: "error" }, `error: ${turn.error}`));
    for (const failure of turn.failures || []) item.append(el("p", { class: "failure" }, `provider failure: ${failure}`));
    item.append(waterfall(turn));
    return item;
  }

  function addTurn(entry, turn) {
    const list = entry.el.querySelector("ol.turns");
    if (list.querySelector(`li[data-index="${turn.index}"]`)) return; // already shown (snapshot + event)
    list.append(turnItem(turn));
  }

  function addCall(call) {
    if (cards.has(call.id)) cards.get(call.id).el.remove();
    const card = el("article", { class: "call live", "data-call-id": call.id },
      el("header", {}, el("a", { href: callHref(call.id) }, call.id),
        ` · ${call.pipeline}${call.variant ? ` (${call.variant})` : ""} · ${call.carrier || ""} · ` +
        `${call.from || "?"} → ${call.to || "?"} · since ${time(call.started_at)} UTC`),
      el("ol", { class: "turns" }));
    const entry = { call, el: card };
    cards.set(call.id, entry);
    for (const turn of call.turns || []) addTurn(entry, turn);
    liveEl.append(card);
    showEmpty();
  }

  function showEmpty() {
    const empty = liveEl.querySelector("p.empty");
    if (cards.size && empty) empty.remove();
    if (!cards.size && !empty) liveEl.append(el("p", { class: "empty" }, "No calls right now."));
  }

  function ended(callId, summary) {
    const entry = cards.get(callId);
    if (!entry) return;
    entry.el.remove();
    cards.delete(callId);
    showEmpty();
    const recent = document.getElementById("recent-calls");
    if (!recent) return; // the store is off: nothing to link to later
    document.getElementById("no-recent")?.remove();
    const call = entry.call;
    const cell = (text, cls) => el("td", cls ? { class: cls } : {}, text === undefined || text === null ? "" : String(text));
    recent.prepend(el("tr", { "data-call-id": call.id },
      cell(time(call.started_at)), el("td", {}, el("a", { href: callHref(call.id) }, call.id)),
      cell(call.pipeline), cell(call.variant), cell(call.from),
      cell(summary.turns, "num"), cell(ms(summary.voice_to_voice_ms_median), "num"), cell(summary.errors, "num"),
      cell(summary.has_recording ? "recorded" : "")));
  }

  function handle(event) {
    if (event.type === "snapshot") {
      for (const entry of cards.values()) entry.el.remove();
      cards.clear();
      for (const call of event.calls) addCall(call);
      showEmpty();
    } else if (event.type === "call_started") {
      addCall(event.call);
    } else if (event.type === "turn") {
      const entry = cards.get(event.call_id);
      if (entry) addTurn(entry, event.turn);
    } else if (event.type === "call_ended") {
      ended(event.call_id, event.summary || {});
    }
  }

  const source = new EventSource("/api/live");
  source.onopen = () => { statusEl.textContent = "live"; statusEl.className = "ok"; };
  source.onerror = () => { statusEl.textContent = "reconnecting…"; statusEl.className = "warn"; };
  source.onmessage = (message) => {
    try {
      const event = JSON.parse(message.data);
      handle(event);
      document.dispatchEvent(new CustomEvent("switchboard-live", { detail: event })); // talk.js follows its call
    } catch (error) {
      console.error("dashboard: bad event", error);
    }
  };
})();

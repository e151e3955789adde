// Switchboard's "Talk to it": a WebRTC call from this browser to a pipeline (telephony/webrtc on the
// server). The microphone goes up as Opus, the bot comes back as Opus; keypad keys and hang-up go over a
// data channel. The transcript follows the live view's events for this call (dashboard.js re-sends them
// as "switchboard-live" DOM events). No dependencies, nothing fetched from elsewhere.
"use strict";
(() => {
  const panel = document.getElementById("talk-call");
  if (!panel) return;
  const statusEl = document.getElementById("talk-status");
  const transcript = document.getElementById("talk-transcript");
  const audio = document.getElementById("talk-audio");
  const buttons = [...document.querySelectorAll("button.talk")];
  let call = null; // {pc, channel, mic, callId, context, meters, shown: Set}
  let ended = null; // the call just ended: its last turns (the bot's goodbye) are still recorded after it

  const say = (text, cls) => { statusEl.textContent = text; statusEl.className = cls || ""; };
  const ms = (v) => (v === null || v === undefined ? "-" : `${Math.round(v)} ms`);

  function line(who, text, extra) {
    const item = document.createElement("li");
    item.className = who;
    const label = document.createElement("span");
    label.textContent = who === "caller" ? "you" : "bot";
    item.append(label, " ", text);
    if (extra) {
      const small = document.createElement("small");
      small.textContent = ` ${extra}`;
      item.append(small);
    }
    transcript.append(item);
  }

  function showTurn(turn, shown) {
    if (shown.has(turn.index)) return;
    shown.add(turn.index);
    if (turn.transcript) line("caller", turn.transcript);
    const v2v = turn.voice_to_voice_ms !== null && turn.voice_to_voice_ms !== undefined
      ? `(voice-to-voice ${ms(turn.voice_to_voice_ms)})` : `(${turn.kind})`;
    line("bot", turn.reply_heard || "(nothing heard)", turn.interrupted ? `${v2v} · interrupted` : v2v);
  }

  document.addEventListener("switchboard-live", (e) => {
    const event = e.detail;
    const shown = call || ended;
    if (!shown || !shown.callId) return;
    if (event.type === "turn" && event.call_id === shown.callId) showTurn(event.turn, shown.shown);
    if (event.type === "snapshot") {
      for (const live of event.calls) {
        if (live.id === shown.callId) (live.turns || []).forEach((turn) => showTurn(turn, shown.shown));
      }
    }
    if (call && event.type === "call_ended" && event.call_id === call.callId) finish("call ended");
  });

  // A level meter per side, from Web Audio: how loud the microphone and the bot are right now.
  function meter(stream, el) {
    const source = call.context.createMediaStreamSource(stream);
    const analyser = call.context.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const tick = () => {
      if (!call) return;
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const rms = Math.sqrt(sum / data.length);
      el.style.setProperty("--level", Math.min(1, rms * 6).toFixed(2));
      el.classList.toggle("on", rms > 0.01);
      call.meters = requestAnimationFrame(tick);
    };
    tick();
  }

  // The server takes the offer whole (no trickle): gather first. Host candidates come at once, STUN's within
  // a few hundred ms; some interfaces never finish, so stop once no candidate came for 500 ms (3 s at most).
  function waitForIce(pc, quietMs, limitMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      let quiet = setTimeout(resolve, limitMs);
      pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
      pc.addEventListener("icecandidate", () => { clearTimeout(quiet); quiet = setTimeout(resolve, quietMs); });
      setTimeout(resolve, limitMs);
    });
  }

  async function start(pipeline, arm) {
    if (call) return;
    buttons.forEach((b) => { b.disabled = true; });
    panel.hidden = false;
    transcript.replaceChildren();
    ended = null;
    say("asking for the microphone…");
    call = { shown: new Set(), context: null, callId: null };
    try {
      if (!navigator.mediaDevices || !window.RTCPeerConnection) {
        throw new Error("this page needs HTTPS (or localhost) for the microphone and WebRTC");
      }
      const ice = await fetch("/webrtc/ice").then((r) => (r.ok ? r.json() : { iceServers: [] }));
      call.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
      const pc = new RTCPeerConnection({ iceServers: ice.iceServers || [] });
      call.pc = pc;
      call.context = new AudioContext();
      call.mic.getTracks().forEach((track) => pc.addTrack(track, call.mic));
      meter(call.mic, document.getElementById("talk-mic"));
      call.channel = pc.createDataChannel("switchboard");
      call.channel.onmessage = (m) => {
        try { if (JSON.parse(m.data).type === "hangup") finish("the bot hung up"); } catch (_) { /* ignore */ }
      };
      pc.ontrack = (e) => {
        const stream = e.streams[0] || new MediaStream([e.track]);
        audio.srcObject = stream;
        audio.play().catch(() => say("click the page to hear the bot", "warn"));
        meter(stream, document.getElementById("talk-bot"));
      };
      pc.onconnectionstatechange = () => {
        if (!call || call.pc !== pc) return;
        if (pc.connectionState === "connected") say(`in a call with ${pipeline}${arm ? ` (arm ${arm})` : ""}`, "ok");
        if (pc.connectionState === "failed") finish("the connection failed (see webrtc.ice_servers in the docs)");
      };
      say("connecting…");
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 500, 3000);
      const response = await fetch("/webrtc/offer", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", pipeline, arm: arm || undefined }) });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
      call.callId = answer.call_id;
      panel.dataset.callId = answer.call_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (error) {
      finish(`could not start the call: ${error.message || error}`, "error");
    }
  }

  function finish(why, cls) {
    if (!call) return;
    const ending = call;
    call = null;
    ended = ending;
    if (ending.channel && ending.channel.readyState === "open") {
      try { ending.channel.send(JSON.stringify({ type: "hangup" })); } catch (_) { /* closing anyway */ }
    }
    cancelAnimationFrame(ending.meters);
    setTimeout(() => ending.pc && ending.pc.close(), 200); // let the hang-up message go first
    if (ending.mic) ending.mic.getTracks().forEach((track) => track.stop());
    if (ending.context) ending.context.close();
    audio.srcObject = null;
    buttons.forEach((b) => { b.disabled = false; });
    say(why, cls || "");
    if (ending.callId) {
      const link = document.createElement("a");
      link.href = `/dashboard/calls/${encodeURIComponent(ending.callId)}`;
      link.textContent = "the call's page";
      statusEl.append(" · ", link);
    }
  }

  for (const button of buttons) {
    button.addEventListener("click", () => start(button.dataset.pipeline, button.dataset.arm));
  }
  document.getElementById("talk-hangup").addEventListener("click", () => finish("you hung up"));
  panel.querySelector(".keypad").addEventListener("click", (e) => {
    const key = e.target.dataset && e.target.dataset.key;
    if (key && call && call.channel && call.channel.readyState === "open") {
      call.channel.send(JSON.stringify({ type: "dtmf", digit: key }));
    }
  });
})();

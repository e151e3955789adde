"""The Twilio Media Streams wire format: what we accept, what we reject and why, what we send."""

import base64
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from switchboard.audio.g711 import ulaw_encode
from switchboard.telephony.twilio import wire as twilio


def media(payload: str, **extra) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": "3",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": payload, **extra},
        }
    )


def test_start_carries_ids_and_custom_parameters():
    event = twilio.parse(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "accountSid": "AC1",
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "customParameters": {"pipeline": "sales", "from": "+15550001111"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
    )
    assert event == twilio.Start("MZ1", "CA1", "AC1", {"pipeline": "sales", "from": "+15550001111"})


def test_media_payload_is_decoded_to_pcm():
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    event = twilio.parse(media(base64.b64encode(ulaw_encode(pcm)).decode()))
    assert isinstance(event, twilio.Media)
    assert event.timestamp_ms == 40
    assert len(event.pcm) == 160
    assert np.max(np.abs(event.pcm.astype(int) - pcm)) < 300  # μ-law is lossy, but close


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x01", "binary frame"),
        ("{not json", "not JSON"),
        ("[1, 2]", "top level is list"),
        ('{"streamSid": "MZ1"}', "message.event: expected str, got missing"),
        ('{"event": "dance"}', "unknown event 'dance'"),
        ('{"event": "media", "streamSid": "MZ1"}', "media.media: expected dict"),
        (media("!!!notbase64!!!"), "invalid base64"),
        (media(""), "media.payload: empty"),
        (media("AAAA", timestamp="soon"), "media.timestamp: expected a number"),
        ('{"event": "mark", "mark": {"name": 5}}', "mark.name: expected str, got int"),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": {"encoding": "audio/x-raw"}}}',
            "expected audio/x-mulaw",
        ),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(twilio.BadFrame, match=reason.replace("(", r"\(").replace("[", r"\[")):
        twilio.parse(raw)


def test_outbound_messages_follow_the_protocol():
    pcm = np.zeros(160, dtype=np.int16)
    sent = json.loads(twilio.media_message("MZ9", pcm))
    assert sent["event"] == "media" and sent["streamSid"] == "MZ9"
    assert len(base64.b64decode(sent["media"]["payload"])) == 160  # raw μ-law, no header
    assert json.loads(twilio.mark_message("MZ9", "m1")) == {
        "event": "mark",
        "streamSid": "MZ9",
        "mark": {"name": "m1"},
    }
    assert json.loads(twilio.clear_message("MZ9")) == {"event": "clear", "streamSid": "MZ9"}


def test_twiml_connects_a_stream_with_parameters_then_hangs_up():
    xml = twilio.connect_twiml(
        "wss://example.com/media-stream", {"pipeline": "default", "from": "+1555", "to": ""}
    )
    root = ET.fromstring(xml)
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    stream = root.find("Connect/Stream")
    assert stream.get("url") == "wss://example.com/media-stream"
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {
        "pipeline": "default",
        "from": "+1555",
    }


@pytest.mark.parametrize(
    ("public_url", "host", "proto", "expected"),
    [
        ("https://abc.ngrok.app", "10.0.0.5:5050", "http", "wss://abc.ngrok.app/media-stream"),
        ("abc.ngrok.app", "10.0.0.5:5050", None, "wss://abc.ngrok.app/media-stream"),
        (None, "bot.example.com", "https", "wss://bot.example.com/media-stream"),
        (None, "127.0.0.1:5050", "http", "ws://127.0.0.1:5050/media-stream"),
    ],
)
def test_stream_url_prefers_public_url_then_forwarded_host(public_url, host, proto, expected):
    assert twilio.stream_url(public_url, host, proto) == expected

"""G.711 codecs: bit-exact against audioop (or its recorded tables), and a round trip on a sine."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest

from switchboard.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

REFERENCE_NPZ = Path(__file__).parent / "data" / "g711_reference.npz"
ALL_CODES = bytes(range(256))
ALL_PCM = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)


def _reference_from_audioop() -> dict[str, np.ndarray] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ImportError:  # Python >= 3.13
            return None
    pcm = ALL_PCM.tobytes()
    return {
        "ulaw_decode": np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16),
        "alaw_decode": np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16),
        "ulaw_encode": np.frombuffer(audioop.lin2ulaw(pcm, 2), dtype=np.uint8),
        "alaw_encode": np.frombuffer(audioop.lin2alaw(pcm, 2), dtype=np.uint8),
    }


def _reference_from_npz() -> dict[str, np.ndarray]:
    with np.load(REFERENCE_NPZ) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module", params=["audioop", "npz"])
def reference(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    if request.param == "npz":
        return _reference_from_npz()
    ref = _reference_from_audioop()
    if ref is None:
        pytest.skip("audioop not available on this Python; the npz reference covers it")
    return ref


def test_npz_reference_has_full_tables() -> None:
    ref = _reference_from_npz()
    assert {k: v.shape for k, v in ref.items()} == {
        "ulaw_decode": (256,),
        "alaw_decode": (256,),
        "ulaw_encode": (65536,),
        "alaw_encode": (65536,),
    }


@pytest.mark.parametrize(("law", "decode"), [("ulaw", ulaw_decode), ("alaw", alaw_decode)])
def test_decode_matches_reference_for_all_codes(reference, law, decode) -> None:
    out = decode(ALL_CODES)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, reference[f"{law}_decode"])


@pytest.mark.parametrize(("law", "encode"), [("ulaw", ulaw_encode), ("alaw", alaw_encode)])
def test_encode_matches_reference_for_all_int16_values(reference, law, encode) -> None:
    out = encode(ALL_PCM)
    assert isinstance(out, bytes)
    np.testing.assert_array_equal(np.frombuffer(out, dtype=np.uint8), reference[f"{law}_encode"])


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_round_trip_sine_stays_within_quantisation_error(encode, decode) -> None:
    t = np.arange(8000) / 8000
    sine = (12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    encoded = encode(sine)
    assert len(encoded) == len(sine)
    decoded = decode(encoded).astype(np.int32)
    # G.711 is logarithmic: the step grows with amplitude, topping out at 1024 in the last segment
    # (≈3% of the sample), so bound the error relative to each sample's magnitude.
    err = np.abs(decoded - sine)
    assert np.all(err <= 0.035 * np.abs(sine.astype(np.int32)) + 16)
    snr_db = 10 * np.log10(np.sum(sine.astype(np.float64) ** 2) / np.sum(err.astype(np.float64) ** 2))
    assert snr_db > 30


def test_decode_then_encode_is_identity_on_codes() -> None:
    # every code decodes to a value that encodes back to itself (μ-law 0x7F/0xFF are both zero)
    ulaw = np.frombuffer(ulaw_encode(ulaw_decode(ALL_CODES)), dtype=np.uint8)
    alaw = np.frombuffer(alaw_encode(alaw_decode(ALL_CODES)), dtype=np.uint8)
    np.testing.assert_array_equal(alaw, np.arange(256))
    differs = np.nonzero(ulaw != np.arange(256))[0]
    assert set(differs.tolist()) <= {0x7F}

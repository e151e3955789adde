"""G.711 μ-law and A-law codecs for 16-bit PCM, implemented with numpy lookup tables.

The tables are built once at import from the ITU-T G.711 segment algorithm (the same one as the
reference ``g711.c`` that CPython's ``audioop`` uses), so the results are bit-exact with
``audioop.lin2ulaw`` / ``ulaw2lin`` / ``lin2alaw`` / ``alaw2lin`` at width 2 without depending on
``audioop`` (removed in Python 3.13).

Decoding indexes a 256-entry int16 table with the code bytes; encoding indexes a 65,536-entry uint8
table with the int16 samples reinterpreted as uint16.
"""

from __future__ import annotations

import numpy as np

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_QUANT_MASK = 0x0F
_SEG_MASK = 0x70
_SEG_SHIFT = 4
_SIGN_BIT = 0x80

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # largest 14-bit magnitude μ-law can represent
# Upper bound of each segment: μ-law on 14-bit magnitudes (after bias), A-law on 13-bit magnitudes.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _all_int16() -> np.ndarray:
    """Every int16 value, ordered so that index i holds the int16 whose bit pattern is uint16 i."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _segment(magnitude: np.ndarray, seg_end: np.ndarray) -> np.ndarray:
    """Index of the first segment whose upper bound is >= magnitude (8 when out of range)."""
    return np.searchsorted(seg_end, magnitude, side="left")


def _build_ulaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 2  # μ-law works on 14-bit samples
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, _ULAW_SEG_END)
    code = (seg << 4) | ((magnitude >> (np.minimum(seg, 7) + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF  # μ-law codes are stored bit-inverted
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t <<= (u & _SEG_MASK) >> _SEG_SHIFT
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 3  # A-law works on 13-bit samples
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = _segment(magnitude, _ALAW_SEG_END)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (seg << _SEG_SHIFT) | ((magnitude >> shift) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55  # A-law inverts the even bits
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = (a & _QUANT_MASK) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


_ULAW_DECODE = _build_ulaw_decode()
_ULAW_ENCODE = _build_ulaw_encode()
_ALAW_DECODE = _build_alaw_decode()
_ALAW_ENCODE = _build_alaw_encode()


def _table_index(pcm: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)


# These run per 20 ms frame on every call: ndarray.take is the fastest lookup for 160-sample frames.


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes -> int16 PCM (one sample per byte)."""
    return _ULAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 PCM -> μ-law bytes (one byte per sample)."""
    return _ULAW_ENCODE.take(_table_index(pcm)).tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes -> int16 PCM (one sample per byte)."""
    return _ALAW_DECODE.take(np.frombuffer(data, dtype=np.uint8))


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 PCM -> A-law bytes (one byte per sample)."""
    return _ALAW_ENCODE.take(_table_index(pcm)).tobytes()

"""Regenerate ``g711_reference.npz`` from the stdlib ``audioop`` module (needs Python <= 3.12).

The npz lets tests/test_g711.py check bit-exactness on Pythons that no longer ship ``audioop``.
Run from anywhere: ``python tests/data/make_g711_reference.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

OUT = Path(__file__).with_name("g711_reference.npz")


def main() -> None:
    codes = bytes(range(256))
    all_pcm = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).tobytes()
    np.savez_compressed(
        OUT,
        ulaw_decode=np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16),
        alaw_decode=np.frombuffer(audioop.alaw2lin(codes, 2), dtype=np.int16),
        # indexed by the int16 sample viewed as uint16, like audio.g711's encode tables
        ulaw_encode=np.frombuffer(audioop.lin2ulaw(all_pcm, 2), dtype=np.uint8),
        alaw_encode=np.frombuffer(audioop.lin2alaw(all_pcm, 2), dtype=np.uint8),
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

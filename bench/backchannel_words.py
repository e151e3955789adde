"""Benchmark: the backchannel rule on many short utterances, without calls: which backchannels it keeps
and which other short things it lets pass, with `interruption.min_words` 1 and 2.

Each utterance is synthesised (the Piper caller voice, and eSpeak NG voices with --voices), sent
through the telephone path (8 kHz μ-law, back to 16 kHz) and recognised by Moonshine tiny, the embedded
recogniser; then the bundled pipeline's `backchannel_words` and `interrupt_words` judge the transcript.
A backchannel "kept" lets the bot go on; another utterance "passed" was taken for a backchannel.

    python -m bench.backchannel_words                       # Piper voice, min_words 1 and 2
    python -m bench.backchannel_words --voices piper,en-us,en-gb-x-rp,en-us+f3,en+m3 --show
"""

from __future__ import annotations

import argparse

import numpy as np

from switchboard.audio.g711 import ulaw_decode, ulaw_encode
from switchboard.audio.resample import resample
from switchboard.caller import synthesize_line
from switchboard.config import default_config_path, load_config
from switchboard.pipeline.backchannel import is_backchannel
from switchboard.providers.moonshine import _engine

BACKCHANNELS = ["yeah", "yes", "yep", "uh-huh", "mm-hmm", "mhm", "okay", "right", "sure", "alright",
                "I see", "got it", "oh", "hmm", "yeah yeah", "okay right", "right right", "uh huh", "mm",
                "aha"]
OTHERS = ["wait", "stop", "no", "hold on", "sorry", "what", "pardon", "Tuesday", "hello", "excuse me",
          "actually", "hang on", "no no", "not yet", "nope", "why", "how much", "never mind", "cancel",
          "again", "who", "help", "agent", "seven", "four", "go", "yes but", "so", "and", "but"]


def heard(text: str, voice: str) -> str:
    pcm, rate = synthesize_line(text, voice)
    line = ulaw_decode(ulaw_encode(resample(np.asarray(pcm, np.int16), rate, 8000)))
    padded = np.concatenate([np.zeros(800, np.int16), line, np.zeros(800, np.int16)])
    return _engine("tiny-en").recognize(resample(padded, 8000, 16000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voices", default="piper", help="piper and/or eSpeak NG voices, comma-separated")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    rules = load_config(default_config_path()).pipeline().interruption
    heard_as = {(kind, text, voice): heard(text, voice) for voice in args.voices.split(",")
                for kind, texts in (("backchannel", BACKCHANNELS), ("other", OTHERS)) for text in texts}
    if args.show:
        for (kind, text, voice), transcript in heard_as.items():
            print(f"  {voice:14s} {kind:11s} {text!r:14s} heard {transcript!r}")
    for min_words in (1, 2):
        def passes(transcript: str, words: int = min_words) -> bool:
            return is_backchannel(transcript, rules.backchannel_words, words, rules.interrupt_words)

        kept = [key for key, said in heard_as.items() if key[0] == "backchannel" and passes(said)]
        passed = [key for key, said in heard_as.items() if key[0] == "other" and passes(said)]
        n_bc = sum(key[0] == "backchannel" for key in heard_as)
        print(f"min_words {min_words}: backchannels kept {len(kept)} of {n_bc}; other short utterances "
              f"taken for backchannels {len(passed)} of {len(heard_as) - n_bc}"
              + (f" ({', '.join(f'{text!r} as {heard_as[k]!r}' for k in passed for text in [k[1]])})"
                 if passed else ""))


if __name__ == "__main__":
    main()

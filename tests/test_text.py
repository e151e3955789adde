"""SentenceChunker: LLM deltas to speakable chunks; speakable(): markdown out of spoken text."""

from __future__ import annotations

import random
import re

import pytest

from switchboard.pipeline.text import SentenceChunker, speakable

HOURS = ("We are open from noon until ten at night, Tuesday to Sunday. On Fridays and Saturdays the "
         "kitchen stays open until eleven. We are closed on Mondays.")


def chunks(deltas: list[str], **options: int) -> list[str]:
    """Everything a chunker returns for a stream, including the flushed remainder."""
    chunker = SentenceChunker(**options)
    out = [chunk for delta in deltas for chunk in chunker.push(delta)]
    rest = chunker.flush()
    return [*out, rest] if rest is not None else out


def by_chars(text: str) -> list[str]:
    return list(text)


def by_words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def by_random_pieces(text: str, seed: int) -> list[str]:
    rng, pieces, start = random.Random(seed), [], 0
    while start < len(text):
        end = start + rng.randint(1, 12)
        pieces.append(text[start:end])
        start = end
    return pieces


STREAMS = [
    HOURS,
    "Dr. Rossi suggests e.g. the risotto. It is 3.5 euros, and we open at 7.30 p.m. on Fridays. See you!",
    "Well, of course we can arrange that for you, and we also have a lovely terrace; would you like it?",
    "Here is the menu:\n- pasta\n- pizza\n\nWhat would you like?",
    "Our chef — who trained in Naples for many years before moving here to open Luigi's — cooks daily.",
    "word " * 90,
    'He said "Sure." Then (he left.) Fine...  ok. Yes?! No',
]


@pytest.mark.parametrize("text", STREAMS)
def test_chunks_do_not_depend_on_how_the_stream_is_split(text: str) -> None:
    whole = chunks([text])
    assert chunks(by_chars(text)) == whole
    assert chunks(by_words(text)) == whole
    for seed in range(5):
        assert chunks(by_random_pieces(text, seed)) == whole


@pytest.mark.parametrize("text", STREAMS)
def test_chunks_keep_every_word(text: str) -> None:
    assert " ".join(chunks([text])).split() == text.split()


def test_sentences_are_chunks() -> None:
    assert chunks([HOURS]) == [
        "We are open from noon until ten at night, Tuesday to Sunday.",
        "On Fridays and Saturdays the kitchen stays open until eleven.",
        "We are closed on Mondays.",
    ]


def test_a_sentence_is_returned_as_soon_as_the_next_one_starts() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Of course. For how") == ["Of course."]
    assert chunker.push(" many people?") == []
    assert chunker.flush() == "For how many people?"


def test_a_sentence_end_waits_for_the_next_word() -> None:
    chunker = SentenceChunker()
    assert chunker.push("We open at 7 p.m. ") == []  # "p.m." might go on: "p.m. on Fridays"
    assert chunker.push("on Fridays. ") == []
    assert chunker.push("Come") == ["We open at 7 p.m. on Fridays."]


@pytest.mark.parametrize("text", [
    "Dr. Rossi will cook tonight.",
    "Mrs. Bianchi booked a table.",
    "We have vegan dishes, e.g. the lentil soup.",
    "The tiramisu is 3.5 euros.",
    "We open at 7.30 tonight.",
    "That is 1,000 grams at 7:30 sharp.",
    "Wait... let me check.",
    "The address is 12 St. Mark Street.",
])
def test_abbreviations_decimals_and_times_do_not_split(text: str) -> None:
    assert chunks([text + " Thanks!"]) == [text, "Thanks!"]


def test_short_clauses_stay_together() -> None:
    text = "Yes, of course, we have a table for four at seven."
    assert chunks([text]) == [text]


def test_a_long_first_sentence_is_cut_at_the_first_clause_after_min_clause_chars() -> None:
    text = ("Well, of course we can arrange that for you, and we also have a lovely terrace; "
            "would you like to sit outside, or inside by the fire?")
    assert chunks([text]) == [
        "Well, of course we can arrange that for you, and we also have a lovely terrace;",
        "would you like to sit outside, or inside by the fire?",
    ]
    assert chunks([text], min_clause_chars=20) == [
        "Well, of course we can arrange that for you,",
        "and we also have a lovely terrace;",
        "would you like to sit outside,",
        "or inside by the fire?",
    ]


def test_em_dash_is_a_clause_boundary() -> None:
    assert chunks(["Our chef — who trained in Naples for many years before moving here — cooks daily."]) == [
        "Our chef — who trained in Naples for many years before moving here —",
        "cooks daily.",
    ]


def test_blank_line_ends_a_chunk_and_single_lines_are_clauses() -> None:
    assert chunks(["Here is the menu:\n- pasta\n- pizza\n\nWhat would you like?"]) == [
        "Here is the menu:\n- pasta\n- pizza",
        "What would you like?",
    ]


def test_text_without_punctuation_is_cut_at_a_word_within_max_chars() -> None:
    text = " ".join(f"word{i}" for i in range(100))
    result = chunks([text], min_clause_chars=20, max_chars=50)
    assert all(len(chunk) <= 50 for chunk in result)
    assert len(result) > 5
    assert " ".join(result) == text


def test_a_single_word_longer_than_max_chars_is_not_broken() -> None:
    url = "https://example.com/" + "a" * 80
    assert chunks([f"See {url} now"], min_clause_chars=20, max_chars=40) == ["See", url, "now"]


def test_whitespace_is_never_a_chunk() -> None:
    chunker = SentenceChunker()
    assert chunker.push("   \n\n  ") == []
    assert chunker.push("Hi.  \n\n ") == []
    assert chunker.push("\n") == []
    assert chunker.flush() == "Hi."
    assert chunker.flush() is None


def test_flush_returns_the_rest_and_starts_afresh() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Goodbye") == []
    assert chunker.flush() == "Goodbye"
    assert chunker.push("Hello. Again") == ["Hello."]
    assert chunker.flush() == "Again"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="min_clause_chars"):
        SentenceChunker(min_clause_chars=300, max_chars=200)


# --- speakable --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "spoken"), [
    ("**Great** choice, *really*.", "Great choice, really."),
    ("## Opening hours", "Opening hours"),
    ("Try the `risotto`.", "Try the risotto."),
    ("- pasta\n- pizza\n* salad", "pasta, pizza, salad"),
    ("We have:\n1. pasta\n2. pizza.", "We have: 1. pasta, 2. pizza."),
    ("See [our menu](https://luigis.example/menu) online.", "See our menu online."),
    ("Book at https://www.luigis.example/book?table=4.", "Book at luigis.example."),
    ("Visit www.luigis.example, or call.", "Visit luigis.example, or call."),
    ("(see http://localhost:8000/menu)", "(see localhost)"),
    ("Table #4 is free.", "Table 4 is free."),
    ("Ask for the chef_special, _today_ only.", "Ask for the chef_special, today only."),
    ("Intro\n\n---\n\nMore.", "Intro, More."),
    ("```\n```", ""),
    ("Plain text stays as it is: 3.5 euros at 7:30.", "Plain text stays as it is: 3.5 euros at 7:30."),
])
def test_speakable_strips_markdown_noise(text: str, spoken: str) -> None:
    assert speakable(text) == spoken

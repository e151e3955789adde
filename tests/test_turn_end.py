"""Which transcripts read as a finished turn (a short commit pause) and which as a caller thinking."""

from __future__ import annotations

import pytest

from switchboard.pipeline.turn_end import Finished, reads_finished


@pytest.mark.parametrize("text", [
    "What are your opening hours?",
    "I'd like to book a table.",
    "Can you help me?",
    "A table for 4 at 7.",
    "Thanks, goodbye!",
    "what?",
])
def test_sentences_and_questions_are_complete(text: str) -> None:
    assert reads_finished(text) is Finished.COMPLETE


@pytest.mark.parametrize("text", [
    "I'd like to book a table for",
    "I'd like to book a table and",
    "So, um",
    "I was wondering,",
    "My number is five five five",
    "My number is 555.",
    "My number is 555-",
    "I'd like to book a table for...",
    "and.",
    "It's for the",
])
def test_unfinished_thoughts_are_incomplete(text: str) -> None:
    assert reads_finished(text) is Finished.INCOMPLETE


@pytest.mark.parametrize("text", ["", "   ", "what are your opening hours", "thank you goodbye",
                                  "that's all, bye", "Well, I think"])
def test_no_punctuation_and_no_telling_word_is_unknown(text: str) -> None:
    assert reads_finished(text) is Finished.UNKNOWN


def test_unpunctuated_recognizers_still_hear_a_trailing_conjunction_or_number() -> None:
    assert reads_finished("for four people and") is Finished.INCOMPLETE
    assert reads_finished("a table for four people at seven") is Finished.INCOMPLETE


@pytest.mark.parametrize("text", ["I'd like to book a table for.", "My number is.", "Can I speak to."])
def test_a_full_stop_on_a_fragment_is_not_an_end(text: str) -> None:
    """Neural recognisers end every piece of audio with a full stop; after a word that needs more it is
    theirs, not the caller's."""
    assert reads_finished(text) is Finished.INCOMPLETE


@pytest.mark.parametrize("text", ["What are you looking for?", "Where are you from?", "At seven.",
                                  "A table for two."])
def test_a_question_or_a_full_sentence_still_ends(text: str) -> None:
    assert reads_finished(text) is Finished.COMPLETE

"""How a task input's text gives way to a token budget (prompts.truncate_words_to_tokens):
for every budget, a prefix of the text, cut at a token boundary, that spends the whole budget
and no more; a control token's spelling in the data counts as the characters it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training_scripts.model_loading import load_tokenizer
from training_scripts.prompts import truncate_words_to_tokens

TEXTS = [
    "#Person1#: the meeting moved to friday\n#Person2#: fine, see you then.",
    "stop </s> go on <s> now",  # control tokens' spellings are text here
    " a  b\tc \n",
    "x",
    "",
]


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def tokenizer(request: pytest.FixtureRequest, tiny_causal: Path, tiny_seq2seq: Path) -> Any:
    return load_tokenizer(str(tiny_causal if request.param == "causal" else tiny_seq2seq))


def tokens(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return len(ids)


def token_boundaries(tokenizer: Any, text: str) -> list[int]:
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
    )
    return sorted({0, *(end for _, end in encoding["offset_mapping"])})


@pytest.mark.parametrize("text", TEXTS)
def test_every_budget_keeps_the_longest_prefix_at_a_token_boundary_that_fits_it(
    tokenizer: Any, text: str
) -> None:
    """Checked against every cut there is: each prefix ending where a token ends, encoded."""
    whole = tokens(tokenizer, text)
    cost = {end: tokens(tokenizer, text[:end]) for end in token_boundaries(tokenizer, text)}
    for budget in range(whole + 2):
        longest = max(end for end, spent in cost.items() if spent <= budget)
        assert truncate_words_to_tokens(tokenizer, text, budget) == text[:longest], budget


@pytest.mark.parametrize("budget", [0, -3])
def test_a_budget_of_nothing_keeps_nothing(tokenizer: Any, budget: int) -> None:
    assert truncate_words_to_tokens(tokenizer, TEXTS[0], budget) == ""


def test_a_word_marker_and_its_character_are_kept_or_cut_together(tiny_seq2seq: Path) -> None:
    """SentencePiece reads "x" as a word marker and the character, two tokens that both end
    at the x: a budget of one keeps neither."""
    tokenizer = load_tokenizer(str(tiny_seq2seq))
    assert tokens(tokenizer, "x") == 2
    assert truncate_words_to_tokens(tokenizer, "x", 1) == ""
    assert truncate_words_to_tokens(tokenizer, "x", 2) == "x"


def test_a_control_tokens_spelling_costs_its_characters_tokens(tiny_causal: Path) -> None:
    """`</s>` in a dialogue is text: it costs what its characters cost, so a budget that ends
    inside it keeps only the characters that fit. (The tiny T5's vocabulary holds `</s>` as a
    word, so its spelling is one token there.)"""
    tokenizer = load_tokenizer(str(tiny_causal))
    assert tokens(tokenizer, "</s>") > 1
    budget = tokens(tokenizer, "stop ") + 1
    kept = truncate_words_to_tokens(tokenizer, "stop </s> go", budget)
    assert kept.startswith("stop ") and len(kept) < len("stop </s>")
    assert tokens(tokenizer, kept) == budget

"""The decoding-time guarantee: every answer is a permutation of the candidate labels."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from tiny_models import WORDS
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

from mmsearch.errors import RerankError
from mmsearch.rerank.constrained import (
    PermutationLogitsProcessor,
    RankingTracker,
    TokenVocabulary,
    candidate_labels,
    parse_answer,
    ranking_regex,
    token_budget,
)

MAX_N = 20
TRIALS = 400
REASON_CHARS = 12


@pytest.fixture(scope="module")
def vocab(tiny_text_lm) -> TokenVocabulary:  # noqa: ANN001
    return TokenVocabulary(tiny_text_lm[1])


def _prompts(tokenizer, rng: random.Random, n: int, batch: int) -> dict[str, torch.Tensor]:  # noqa: ANN001
    texts = []
    for _ in range(batch):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        messages = [
            {"role": "user", "content": [{"type": "text", "text": f"Rank {n} for: {words}"}]}
        ]
        texts.append(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )
    tokenizer.padding_side = "left"
    return tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)


def _decode(
    tiny_text_lm,
    vocab: TokenVocabulary,
    n: int,
    rng: random.Random,
    *,  # noqa: ANN001
    batch: int = 1,
    enforce_unique: bool = True,
    extra: list[LogitsProcessor] | None = None,
    with_reason: bool = True,
    stop_on_close: bool = True,
) -> list[tuple[str, list[int]]]:
    """Greedy decoding of ``batch`` different prompts at once; rows are independent.
    ``stop_on_close=False`` leaves out the stopping criterion (the forced EOS alone)."""
    model, tokenizer = tiny_text_lm
    inputs = _prompts(tokenizer, rng, n, batch)
    processor = PermutationLogitsProcessor(
        vocab, n, REASON_CHARS, enforce_unique=enforce_unique, with_reason=with_reason
    )
    criterion = processor.stopping_criterion if stop_on_close else None
    out = model.generate(
        **inputs,
        logits_processor=LogitsProcessorList([*(extra or []), processor]),
        stopping_criteria=StoppingCriteriaList([criterion] if criterion else []),
        max_new_tokens=token_budget(n, REASON_CHARS),
        do_sample=False,
        eos_token_id=vocab.eos_token_id,
        pad_token_id=vocab.eos_token_id,
    )
    rows = out[:, inputs["input_ids"].shape[1] :].tolist()
    return [(vocab.text_of(ids), ids) for ids in rows]


def _is_permutation(text: str, n: int, with_reason: bool = True) -> bool:
    try:
        parse_answer(text, n, with_reason=with_reason)
    except RerankError:
        return False
    return True


def test_schema_pins_the_item_count_but_allows_repeated_labels() -> None:
    regex = re.compile(ranking_regex(3, 10))
    assert regex.fullmatch('{"ranking": ["2", "3", "1"], "reason": "ok"}')
    assert not regex.fullmatch('{"ranking": ["2", "3"], "reason": "ok"}')
    assert not regex.fullmatch('{"ranking": ["2", "3", "1", "1"], "reason": "ok"}')
    assert not regex.fullmatch('{"ranking": ["2", "4", "1"], "reason": "ok"}')
    # Outlines does not compile uniqueItems: this is what the logits processor is for.
    assert regex.fullmatch('{"ranking": ["2", "2", "2"], "reason": "ok"}')


@pytest.mark.parametrize("n", [1, 2, 9, 10, 20, 99, 100])
@pytest.mark.parametrize("reason_chars", [0, 7, 200])
def test_token_budget_fits_the_longest_possible_answer(n: int, reason_chars: int) -> None:
    labels = sorted(candidate_labels(n), key=len, reverse=True)
    longest = (
        '{ "ranking" : [ '
        + ", ".join(f'"{label}"' for label in labels)
        + ' ] , "reason" : "'
        + "\\n" * reason_chars
        + '" }'
    )
    assert re.fullmatch(ranking_regex(n, reason_chars), longest)
    assert len(longest) + 1 <= token_budget(n, reason_chars)


def test_tracker_lets_a_used_label_grow_into_a_longer_unused_one() -> None:
    tracker = RankingTracker(candidate_labels(12))
    tracker.advance('{"ranking": ["1", ')
    assert tracker.allows('"1')  # may still become "10", "11" or "12"
    assert tracker.allows('"10"')
    assert not tracker.allows('"1"')
    assert not tracker.allows('"1",')


def test_tracker_rejects_a_token_that_closes_a_used_label_and_continues() -> None:
    tracker = RankingTracker(candidate_labels(12))
    tracker.advance('{"ranking": ["3", "10", "1')
    assert not tracker.allows('0", "')
    assert tracker.allows('1", "')
    assert not tracker.allows('1", "3')
    assert tracker.allows('1", "2')


def test_tracker_rejects_a_prefix_no_unused_label_completes() -> None:
    tracker = RankingTracker(candidate_labels(11))
    tracker.advance('{"ranking": ["10", "11", "')
    assert tracker.allows("1")  # "1" itself is unused
    tracker.advance("1")
    assert not tracker.allows("1")
    assert not tracker.allows("0")
    assert tracker.allows('"')


def test_tracker_stops_checking_once_the_ranking_is_closed() -> None:
    tracker = RankingTracker(candidate_labels(2))
    tracker.advance('{"ranking": ["2", "1"], "reason": "')
    assert not tracker.checking
    assert tracker.allows('"1", "1"')


def test_test_vocabulary_has_tokens_spanning_labels_and_punctuation(vocab) -> None:  # noqa: ANN001
    spanning = [t for t in vocab.token_text.values() if re.search(r'\d"|"\d', t)]
    crossing = [t for t in spanning if re.search(r'\d",\s?"\d', t)]
    assert len(spanning) > 50 and crossing


@pytest.mark.parametrize(
    ("with_reason", "stop_on_close"), [(True, True), (False, True), (False, False)]
)
def test_constrained_decoding_always_yields_a_permutation(
    tiny_text_lm,  # noqa: ANN001
    vocab,  # noqa: ANN001
    with_reason: bool,
    stop_on_close: bool,
) -> None:
    rng = random.Random(1234)
    invalid, spanning_tokens_used, trials = [], 0, 0
    for n in range(1, MAX_N + 1):
        decoded = _decode(
            tiny_text_lm,
            vocab,
            n,
            rng,
            batch=TRIALS // MAX_N,
            with_reason=with_reason,
            stop_on_close=stop_on_close,
        )
        for text, ids in decoded:
            trials += 1
            if not _is_permutation(text, n, with_reason):
                invalid.append((n, text))
            if not with_reason:
                # Nothing follows the token that closes the ranking but EOS/padding.
                pieces = [vocab.token_text.get(i, "") for i in ids]
                closing = next(k for k, t in enumerate(pieces) if "]" in t)
                assert all(p == "" for p in pieces[closing + 1 :]), (n, text)
            spanning_tokens_used += sum(
                bool(re.search(r'\d",\s?"', vocab.token_text.get(i, ""))) for i in ids
            )
    assert trials == TRIALS and invalid == []
    assert spanning_tokens_used > 0  # the hard multi-character tokens were exercised


def test_schema_only_decoding_repeats_labels(tiny_text_lm, vocab) -> None:  # noqa: ANN001
    rng = random.Random(1234)
    outcomes = []
    for n in range(1, MAX_N + 1):
        for text, _ in _decode(tiny_text_lm, vocab, n, rng, batch=4, enforce_unique=False):
            json.loads(text)  # still schema-valid JSON ...
            outcomes.append(_is_permutation(text, n))
    assert outcomes.count(False) > 0  # ... but not always a permutation


class _Saboteur(LogitsProcessor):
    """A model that wants to stop at once, close the array, and say "1" forever."""

    def __init__(self, vocab: TokenVocabulary) -> None:
        self.favoured = [vocab.eos_token_id] + [
            i for i, t in vocab.token_text.items() if t in {"]", '"]', '"1"', "1", '"1",'}
        ]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.favoured] += 1e4
        return scores


@pytest.mark.parametrize("with_reason", [True, False])
def test_a_model_pushing_to_stop_early_or_repeat_still_yields_a_permutation(
    tiny_text_lm,  # noqa: ANN001
    vocab,  # noqa: ANN001
    with_reason: bool,
) -> None:
    rng = random.Random(7)
    for n in (1, 2, 5, 11, 20):
        [(text, _)] = _decode(
            tiny_text_lm, vocab, n, rng, extra=[_Saboteur(vocab)], with_reason=with_reason
        )
        parsed = parse_answer(text, n, with_reason=with_reason)
        assert sorted(parsed.labels, key=int) == candidate_labels(n)

"""Constrained decoding of a ranking that is always a permutation of the candidates.

The model answers ``{"ranking": ["3", "1", ...], "reason": "..."}``. Outlines turns the
JSON schema into a regular expression and an ``outlines_core`` index over the
tokenizer's vocabulary; the schema pins the array to exactly N items, each one of the
labels ``"1"`` .. ``"N"``. JSON schema has ``uniqueItems``, but Outlines does not
compile it, so a schema alone lets the model write ``["2", "2", "1"]``.

:class:`PermutationLogitsProcessor` closes that gap while decoding: it walks the same
``Guide`` Outlines would, and of the tokens the guide allows it additionally masks
every token whose text would complete a label already used, or start a label that can
no longer be completed into an unused one (``"1"`` used: ``"1`` may still go on to
``"10"`` but may not close). Tokens spanning several characters (``1",``, ``", "``)
are simulated character by character. Because every label is a prefix-closed string
of digits and every unused label stays reachable, the guide never runs out of
tokens, and since the array must hold N items, the model cannot stop before writing
every label exactly once.

The ranking comes first in the answer, so a caller that does not want the reason can
stop there: with ``with_reason=False`` the processor allows only end-of-sequence once
the array is closed, and :class:`RankingClosed` stops generation on the very token that
closes it (one forward pass fewer). Up to that token the constraint is the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from outlines.processors.base_logits_processor import OutlinesLogitsProcessor
from outlines_core import Guide, Index, Vocabulary
from outlines_core.json_schema import build_regex_from_schema
from transformers import StoppingCriteria

from mmsearch.errors import RerankError

logger = logging.getLogger(__name__)

WHITESPACE_PATTERN = r"[ ]?"
"""At most one space between JSON tokens: keeps the answer, and so its token budget,
bounded."""

_SPIECE_UNDERLINE = "\u2581"

_BEFORE, _IN_ARRAY, _AFTER = 0, 1, 2


def candidate_labels(n: int) -> list[str]:
    """The labels shown to the model: ``"1"`` .. ``"n"``. Candidate IDs never reach it."""
    return [str(i) for i in range(1, n + 1)]


def ranking_schema(n: int, reason_max_chars: int) -> dict[str, Any]:
    """JSON schema of the answer: the ranking first (so it is complete before the free
    text starts), then a bounded reason."""
    labels = candidate_labels(n)
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "string", "enum": labels},
                "minItems": n,
                "maxItems": n,
                "uniqueItems": True,
            },
            "reason": {"type": "string", "maxLength": reason_max_chars},
        },
        "required": ["ranking", "reason"],
        "additionalProperties": False,
    }


def ranking_regex(n: int, reason_max_chars: int) -> str:
    return build_regex_from_schema(
        json.dumps(ranking_schema(n, reason_max_chars)), WHITESPACE_PATTERN
    )


def max_answer_chars(n: int, reason_max_chars: int) -> int:
    """Length of the longest string the ranking regex accepts.

    Every token the vocabulary keeps is at least one character long, so this many
    tokens plus one for end-of-sequence always suffice to finish the answer."""
    ws = 1
    label_chars = sum(len(label) + 2 for label in candidate_labels(n))
    head = len('{"ranking":[') + 4 * ws
    separators = (n - 1) * (1 + ws)
    middle = len('],"reason":') + 5 * ws
    reason = 2 + 2 * reason_max_chars  # quotes; each character may be a 2-char escape
    tail = len("}") + ws
    return head + label_chars + separators + middle + reason + tail


def token_budget(n: int, reason_max_chars: int) -> int:
    """``max_new_tokens`` that can never cut the answer short."""
    return max_answer_chars(n, reason_max_chars) + 1


class TokenVocabulary:
    """The tokenizer's vocabulary as text, shared by the Outlines index and the
    uniqueness check so both see exactly the same characters for each token.

    Special tokens (other than end-of-sequence) and tokens that decode to nothing are
    left out: the answer is plain JSON text."""

    def __init__(self, tokenizer: Any, eos_token_id: int | None = None) -> None:
        eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            raise RerankError("the reranker's tokenizer has no end-of-sequence token")
        self.eos_token_id: int = int(eos)
        special = set(getattr(tokenizer, "all_special_ids", []))
        special.update(
            i
            for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if getattr(tok, "special", False)
        )
        self.token_text: dict[int, str] = {}
        by_text: dict[str, list[int]] = {}
        for token, token_id in tokenizer.get_vocab().items():
            if token_id in special or token_id == self.eos_token_id:
                continue
            text = tokenizer.convert_tokens_to_string([token])
            if token.startswith(_SPIECE_UNDERLINE) and not text.startswith(" "):
                text = " " + text  # sentencepiece drops the leading space of a lone token
            if not text:
                continue
            self.token_text[token_id] = text
            by_text.setdefault(text, []).append(token_id)
        self.vocabulary = Vocabulary(self.eos_token_id, by_text)

    def text_of(self, token_ids: Sequence[int]) -> str:
        """The answer as the guide saw it (end-of-sequence and padding dropped)."""
        return "".join(self.token_text.get(int(t), "") for t in token_ids)

    @lru_cache(maxsize=32)  # noqa: B019 - one vocabulary per loaded model, kept for its life
    def index(self, n: int, reason_max_chars: int) -> Index:
        return Index(ranking_regex(n, reason_max_chars), self.vocabulary)


@dataclass(frozen=True, slots=True)
class _RankingState:
    phase: int = _BEFORE
    in_label: bool = False
    partial: str = ""
    used: frozenset[str] = frozenset()


class RankingTracker:
    """Follows the ranking array character by character and says whether a piece of
    text may come next without repeating a label."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = frozenset(labels)
        extensions: dict[str, set[str]] = {}
        for label in self.labels:
            for k in range(len(label) + 1):
                extensions.setdefault(label[:k], set()).add(label)
        self._extensions = {p: frozenset(s) for p, s in extensions.items()}
        self.state = _RankingState()

    @property
    def used(self) -> frozenset[str]:
        return self.state.used

    @property
    def checking(self) -> bool:
        """False once the array is closed: from there on the schema alone decides."""
        return self.state.phase != _AFTER

    def _step(self, state: _RankingState, text: str) -> _RankingState | None:
        phase, in_label, partial, used = state.phase, state.in_label, state.partial, state.used
        for ch in text:
            if phase == _AFTER:
                break
            if phase == _BEFORE:
                if ch == "[":
                    phase = _IN_ARRAY
                continue
            if in_label:
                if ch == '"':
                    if partial in used or partial not in self.labels:
                        return None
                    used = used | {partial}
                    in_label, partial = False, ""
                else:
                    partial += ch
                    if not (self._extensions.get(partial, frozenset()) - used):
                        return None
            elif ch == '"':
                in_label, partial = True, ""
            elif ch == "]":
                phase = _AFTER
        return _RankingState(phase, in_label, partial, used)

    def allows(self, text: str) -> bool:
        return self._step(self.state, text) is not None

    def advance(self, text: str) -> None:
        nxt = self._step(self.state, text)
        if nxt is None:
            raise RerankError(f"decoded text {text!r} repeats a ranking label")
        self.state = nxt


class PermutationLogitsProcessor(OutlinesLogitsProcessor):
    """Outlines' JSON-schema guide plus the one rule the schema cannot express: no
    label twice. A standard ``transformers`` logits processor (batch rows are
    independent). ``enforce_unique=False`` leaves only the schema, for comparison.
    ``with_reason=False``: end-of-sequence as soon as the ranking is closed."""

    def __init__(
        self,
        vocab: TokenVocabulary,
        n: int,
        reason_max_chars: int,
        *,
        enforce_unique: bool = True,
        with_reason: bool = True,
    ) -> None:
        super().__init__("torch")
        self.vocab = vocab
        self.n = n
        self.labels = candidate_labels(n)
        self.index = vocab.index(n, reason_max_chars)
        self.enforce_unique = enforce_unique
        self.with_reason = with_reason
        self.stopping_criterion: RankingClosed | None = (
            None if with_reason else RankingClosed(vocab)
        )
        """Stops generation on the token closing the ranking (backends that take
        ``transformers`` stopping criteria add it; others stop on the forced EOS)."""
        self._closed: list[bool] = []
        self._guides: list[Guide] = []
        self._trackers: list[RankingTracker] = []
        self._started = False

    def reset(self) -> None:
        self._started = False

    def process_logits(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        batch, vocab_size = logits.shape
        if not self._started:
            self._guides = [Guide(self.index) for _ in range(batch)]
            self._trackers = [RankingTracker(self.labels) for _ in range(batch)]
            self._closed = [False] * batch
            self._bitmask = torch.empty((1, (vocab_size + 31) // 32), dtype=torch.int32)
            self._shifts = torch.arange(32, dtype=torch.int32)
            self._started = True
        else:
            for i in range(batch):
                last = int(input_ids[i, -1])
                guide = self._guides[i]
                if last == self.vocab.eos_token_id and (guide.is_finished() or self._closed[i]):
                    continue
                guide.advance(token_id=last, return_tokens=False)
                if "]" in self.vocab.token_text.get(last, ""):
                    self._closed[i] = True  # labels are digits: "]" only closes the array
                if self.enforce_unique:
                    self._trackers[i].advance(self.vocab.token_text.get(last, ""))
        for i in range(batch):
            logits[i] = self._mask_row(i, logits[i])
        return logits

    def _mask_row(self, i: int, row: torch.Tensor) -> torch.Tensor:
        guide, tracker = self._guides[i], self._trackers[i]
        if self._closed[i] and not self.with_reason:
            keep = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
            keep[self.vocab.eos_token_id] = True
            return row.masked_fill(~keep, float("-inf"))
        if self.enforce_unique and tracker.checking:
            text = self.vocab.token_text
            allowed = [t for t in guide.get_tokens() if t not in text or tracker.allows(text[t])]
            if not allowed:
                raise RerankError("no token can continue the ranking without repeating a label")
            keep = torch.zeros(row.shape[0], dtype=torch.bool, device=row.device)
            keep[torch.tensor(allowed, dtype=torch.long, device=row.device)] = True
        else:
            guide.write_mask_into(
                self._bitmask.data_ptr(), self._bitmask.numel(), self._bitmask.element_size()
            )
            bits = (self._bitmask.unsqueeze(-1) >> self._shifts) & 1
            keep = bits.view(-1)[: row.shape[0]].bool().to(row.device)
        return row.masked_fill(~keep, float("-inf"))


class RankingClosed(StoppingCriteria):
    """Stops a row once a generated token closes the ranking array."""

    def __init__(self, vocab: TokenVocabulary) -> None:
        self.vocab = vocab
        self._done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        last = input_ids[:, -1].tolist()
        closed = torch.tensor(
            ["]" in self.vocab.token_text.get(int(t), "") for t in last],
            dtype=torch.bool,
            device=input_ids.device,
        )
        self._done = closed if self._done is None else self._done | closed
        return self._done


def ranking_prefix(text: str) -> str:
    """The answer up to its closed ranking, as JSON of its own: ``{"ranking": [...]}``."""
    end = text.find("]")
    if end < 0:
        raise RerankError("the reranker's answer stopped before the ranking was complete")
    return text[: end + 1] + "}"


@dataclass(frozen=True, slots=True)
class ParsedRanking:
    labels: list[str]
    reason: str


def parse_answer(text: str, n: int, *, with_reason: bool = True) -> ParsedRanking:
    """Read a finished answer; raise :class:`RerankError` if it is not a permutation
    (only possible when decoding was cut short or ran without the constraint).
    ``with_reason=False``: only the ranking is read (decoding stopped after it)."""
    if not with_reason:
        text = ranking_prefix(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RerankError(f"the reranker's answer is not complete JSON: {e.msg}") from e
    ranking = data.get("ranking") if isinstance(data, dict) else None
    labels = candidate_labels(n)
    if not isinstance(ranking, list) or sorted(ranking, key=str) != sorted(labels, key=str):
        raise RerankError(f"the reranker's ranking {ranking!r} is not a permutation of 1..{n}")
    reason = data.get("reason", "")
    return ParsedRanking(labels=[str(x) for x in ranking], reason=str(reason))

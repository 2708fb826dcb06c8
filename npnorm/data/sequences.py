"""Sequence data for the transformer chapter - nothing is downloaded.

* :func:`load_corpus` - a few kilobytes of English text that ships with the package
  (``npnorm/data/corpus/fables.txt``: nine Aesop fables retold for this project, dedicated to the
  public domain), and :class:`CharVocab` to turn it into token ids.
* :func:`char_lm_batch` - random windows of the corpus for next-character prediction.
* :func:`reversal_batch` - the algorithmic task: ``x_1 .. x_n | x_n .. x_1``; the model must
  produce the reversed half (loss only there), which needs attention to reach back across the
  sequence.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_corpus", "CharVocab", "char_lm_batch", "reversal_batch"]


def load_corpus() -> str:
    """The shipped text (about 3.8 kB, 9 fables)."""
    return resources.files("npnorm.data").joinpath("corpus/fables.txt").read_text(encoding="utf-8")


class CharVocab:
    """Characters of a text <-> integer ids (sorted, so the mapping is reproducible)."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_lm_batch(data: np.ndarray, batch: int, length: int, rng: np.random.Generator):
    """``(ids, targets, mask)``: ``batch`` random windows of ``length`` ids and the next ids."""
    starts = rng.integers(0, len(data) - length - 1, batch)
    ids = np.stack([data[s:s + length] for s in starts])
    targets = np.stack([data[s + 1:s + length + 1] for s in starts])
    return ids, targets, np.ones_like(ids, dtype=bool)


def reversal_batch(batch: int, n: int, vocab: int, rng: np.random.Generator):
    """Sequence reversal: ``(ids, targets, mask)``, each ``(batch, 2n)``.

    A sequence is ``x_1..x_n, SEP, x_n..x_1`` with symbols ``0..vocab-1`` and ``SEP = vocab`` (so
    the model's vocabulary is ``vocab + 1``); ``ids`` are all but its last token, ``targets`` all but
    its first, and ``mask`` marks the ``n`` positions whose target is in the reversed half (the loss
    and the accuracy are taken there only; the first half is random and cannot be predicted).
    """
    x = rng.integers(0, vocab, (batch, n))
    seq = np.concatenate([x, np.full((batch, 1), vocab), x[:, ::-1]], axis=1)
    mask = np.zeros((batch, 2 * n), dtype=bool)
    mask[:, n:] = True
    return seq[:, :-1], seq[:, 1:], mask

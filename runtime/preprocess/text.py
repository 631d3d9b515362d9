"""Pure-Python twin of keras.layers.TextVectorization(standardize="lower_and_strip_punctuation",
split="whitespace"): the same token ids, without TensorFlow.

TensorFlow's choices reproduced here (each one checked over the whole sms_spam corpus by a test):
- `tf.strings.lower` without an encoding lowercases ASCII letters only ("É" stays "É");
- the punctuation regex strips exactly the 32 ASCII punctuation characters;
- `tf.strings.split` splits on ASCII whitespace only (a no-break space stays inside a token).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgekit.runtime.errors import InvalidInputError

_ASCII_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})
_STRIP_PUNCTUATION = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ASCII_WHITESPACE = re.compile(r"[ \t\n\r\v\f]+")

PAD_ID = 0
OOV_ID = 1


def standardize(text: str) -> str:
    return text.translate(_ASCII_LOWER).translate(_STRIP_PUNCTUATION)


def split_tokens(text: str) -> list[str]:
    return [t for t in _ASCII_WHITESPACE.split(text) if t]


def read_vocab(path: str | Path) -> list[str]:
    """vocab.txt: line i = token of id i. Split on "\\n" only: a token may hold other line breaks
    that str.splitlines() would cut (e.g. U+2028)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read vocabulary {path}: {exc}") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()  # the final newline ends the last line, it is not an empty token
    if len(tokens) < 2:
        raise InvalidInputError(f"vocabulary {path} has {len(tokens)} lines; expected padding, "
                                "[UNK] and tokens")
    return tokens


# Training's choice, and the default wherever a manifest omits it: pad at the FRONT, so the unmasked fused
# LSTM ends on real tokens; keep the first max_len tokens.
PADDING, TRUNCATING = "pre", "post"


def pad_ids(sequences, max_len: int, padding: str = PADDING, truncating: str = TRUNCATING) -> np.ndarray:
    """Token id lists -> int32 [N, max_len]: cut to max_len (keep the start for "post"), then fill
    with PAD_ID before ("pre") or after ("post") the tokens."""
    out = np.full((len(sequences), max_len), PAD_ID, dtype=np.int32)
    for row, ids in enumerate(sequences):
        ids = list(ids)
        if len(ids) > max_len:
            ids = ids[:max_len] if truncating == "post" else ids[-max_len:]
        if ids:
            if padding == "post":
                out[row, :len(ids)] = ids
            else:
                out[row, max_len - len(ids):] = ids
    return out


class TextTokenizer:
    """Texts -> int32 [N, max_len] token ids, padded and truncated as the params say."""

    def __init__(self, vocab: list[str], max_len: int, padding: str = PADDING, truncating: str = TRUNCATING):
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise InvalidInputError(f"padding/truncating must be 'pre' or 'post', got "
                                    f"{padding!r}/{truncating!r}")
        # Ids 0 (padding "") and 1 ([UNK]) are reserved: a text token never maps to them by name.
        self.index = {token: i for i, token in enumerate(vocab) if i >= 2}
        self.max_len = int(max_len)
        self.padding = padding
        self.truncating = truncating

    def ids(self, text: str) -> list[int]:
        return [self.index.get(token, OOV_ID) for token in split_tokens(standardize(text))]

    def __call__(self, texts) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = np.full((len(texts), self.max_len), PAD_ID, dtype=np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"text input {row} is a {type(text).__name__}, expected str")
            if not text.strip():
                raise InvalidInputError(f"text input {row} is empty")
            out[row] = pad_ids([self.ids(text)], self.max_len, self.padding, self.truncating)[0]
        return out


def from_params(params: dict, assets_dir: str | Path | None) -> TextTokenizer:
    for key, expected in (("standardize", "lower_and_strip_punctuation"), ("split", "whitespace")):
        if params.get(key, expected) != expected:
            raise InvalidInputError(f"text preprocessing {key}={params.get(key)!r} is not supported "
                                    f"(only {expected!r})")
    vocab_file = Path(params.get("vocab_file", "assets/vocab.txt"))
    base = Path(assets_dir) if assets_dir is not None else Path(".")
    # vocab_file is written relative to the model directory ("assets/vocab.txt"); accept either
    # the model/bundle directory or its assets folder.
    candidates = [base / vocab_file, base / vocab_file.name]
    path = next((p for p in candidates if p.is_file()), candidates[0])
    return TextTokenizer(read_vocab(path), params["max_len"], params.get("padding", PADDING),
                         params.get("truncating", TRUNCATING))

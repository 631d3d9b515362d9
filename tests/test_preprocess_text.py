"""The numpy tokenizer (runtime/preprocess/text.py) against keras.layers.TextVectorization."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtime.errors import InvalidInputError
from edgekit.runtime.kinds import make_preprocessor
from edgekit.runtime.preprocess.text import TextTokenizer, pad_ids, read_vocab
from edgekit.train.data import read_text_table


def _keras_ids(vectorizer, texts):
    return vectorizer(np.array(texts, dtype=object)).to_list()


def test_tokenizer_matches_text_vectorization_on_whole_corpus(sms_spam, tmp_path):
    from edgekit.train.text import make_vectorizer

    texts, _, _ = read_text_table(sms_spam)
    assert len(texts) == 4500
    # A vocabulary smaller than the corpus' so that out-of-vocabulary ids are exercised too.
    vectorizer = make_vectorizer(texts[:3000], max_tokens=2000)
    vocab = vectorizer.get_vocabulary()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = TextTokenizer(read_vocab(tmp_path / "vocab.txt"), max_len=200)
    expected = _keras_ids(vectorizer, texts)
    mismatches = [i for i, text in enumerate(texts) if tokenizer.ids(text) != expected[i]]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {texts[mismatches[0]]!r}"
    assert any(1 in ids for ids in expected), "the check should cover OOV tokens"


@pytest.mark.parametrize("text", [
    "ÉCOLE Straße ÀB",                 # tf.strings.lower lowercases ASCII only
    "a\u00a0b c\u2009d\te\nf\r\ng",    # only ASCII whitespace splits tokens
    "don't!!! (really)... e-mail £5 ¿qué?",
    "…¡¿“quoted”„ \u2028line",
    "!!!",                             # all punctuation: no tokens at all
])
def test_tokenizer_matches_text_vectorization_on_unicode_edge_cases(text, tmp_path):
    from edgekit.train.text import make_vectorizer

    corpus = ["école straße àb ÉCOLE a\u00a0b c\u2009d don't really e-mail £5 ¿qué? …¡¿“quoted”„",
              "\u2028line other words", text]
    vectorizer = make_vectorizer(corpus, max_tokens=100)
    vocab = vectorizer.get_vocabulary()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = TextTokenizer(read_vocab(tmp_path / "vocab.txt"), max_len=20)
    assert tokenizer.ids(text) == _keras_ids(vectorizer, [text])[0]


def test_pad_ids_pre_padding_keeps_the_start_of_long_texts():
    out = pad_ids([[5, 6], [1, 2, 3, 4, 5]], max_len=4, padding="pre", truncating="post")
    assert out.dtype == np.int32
    assert out.tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]]
    assert pad_ids([[5, 6]], 4, padding="post").tolist() == [[5, 6, 0, 0]]


def test_make_preprocessor_text_reads_vocab_from_model_dir(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "vocab.txt").write_text("\n[UNK]\nfree\nprize\n", encoding="utf-8")
    params = {"type": "text", "max_len": 5, "vocab_file": "assets/vocab.txt", "padding": "pre",
              "truncating": "post"}
    pre = make_preprocessor(params, tmp_path)
    assert pre(["FREE prize, now!"]).tolist() == [[0, 0, 2, 3, 1]]
    with pytest.raises(InvalidInputError, match="empty"):
        pre(["   "])
    with pytest.raises(InvalidInputError, match="expected str"):
        pre([42])


def test_a_manifest_without_padding_keys_tokenizes_as_training_does(tmp_path):
    """Defaults must be training's (pre-padding, keep the first tokens): a manifest that omits the keys
    used to tokenize with post-padding, which the unmasked fused LSTM reads differently."""
    from edgekit.train import text as train_text

    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "vocab.txt").write_text("\n[UNK]\nfree\nprize\nnow\n", encoding="utf-8")
    explicit = {"type": "text", "max_len": 5, "vocab_file": "assets/vocab.txt",
                "padding": train_text.PADDING, "truncating": train_text.TRUNCATING}
    implicit = {k: v for k, v in explicit.items() if k not in ("padding", "truncating")}
    texts = ["free prize", "free prize now now now now now"]
    ids = make_preprocessor(implicit, tmp_path)(texts)
    assert ids.tolist() == make_preprocessor(explicit, tmp_path)(texts).tolist()
    assert TextTokenizer(["", "[UNK]", "free"], 3)(["free"]).tolist() == [[0, 0, 2]]

"""Subword tokens: words plus hashed character n-grams (fastText's idea), batched and averaged by the encoder."""

import subprocess
import sys
import zlib

import numpy as np
import torch

from rnnkit.data.labeled import SUBWORD_BUCKETS, SUBWORD_MAX, Examples, TokenVocab
from rnnkit.models.classifier import SequenceClassifier, SequenceClassifierConfig


def test_each_word_is_its_id_then_its_ngrams():
    vocab = TokenVocab.build(["the film was good", "bad film"], "subword")
    assert len(vocab) == len(vocab.tokens) + SUBWORD_BUCKETS
    ids = vocab.encode("Good films!")  # (T, K): good, films, !
    assert ids.shape[0] == 3
    assert ids[0, 0] == vocab.tokens.index("good") and ids[1, 0] == 1  # "films" was never seen: <unk> ...
    grams = {"<go", "goo", "ood", "od>", "<goo", "good", "ood>", "<good", "good>"}  # n = 3..5 of "<good>"
    want = sorted(len(vocab.tokens) + zlib.crc32(g.encode()) % SUBWORD_BUCKETS for g in grams)
    assert sorted(ids[0, 1:][ids[0, 1:] > 0].tolist()) == want
    inner = {"<fi", "fil", "ilm", "<fil", "film", "<film"}  # the n-grams of "<film>" that do not hold its end
    film = {len(vocab.tokens) + zlib.crc32(g.encode()) % SUBWORD_BUCKETS for g in inner}
    assert film < set(ids[1, 1:].tolist())  # ... but "films" shares them with "film"
    assert (ids[2, 1:] == 0).all()  # "<!>" is the whole marked word, which the word id already stands for
    long = vocab.encode("a" * 60)
    assert long.shape == (1, SUBWORD_MAX)


def test_ngram_ids_do_not_depend_on_the_process():
    """str hashes are salted per process; the ids must not be, or a saved model would read other rows."""
    code = ("from rnnkit.data.labeled import TokenVocab; "
            "print(TokenVocab(['x'], 'subword').encode('unwatchable').tolist())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(runs) == 1


def test_round_trip_keeps_the_buckets():
    vocab = TokenVocab.build(["one two", "two three"], "subword")
    again = TokenVocab.from_dict(vocab.to_dict())
    assert len(again) == len(vocab) and np.array_equal(again.encode("two threes"), vocab.encode("two threes"))


def test_batches_pad_both_words_and_ngrams():
    vocab = TokenVocab.build(["a b", "extraordinary"], "subword")
    texts = ["a", "extraordinary b"]
    batch = Examples([vocab.encode(t) for t in texts], np.array([0, 1])).batch([0, 1])
    assert batch.x.shape == (2, 2, max(vocab.encode(t).shape[1] for t in texts))
    assert batch.lengths.tolist() == [1, 2] and (batch.x[0, 1] == 0).all()


def test_the_encoder_averages_a_words_pieces_and_padding_changes_nothing():
    vocab = TokenVocab.build(["good bad fine", "awful great"], "subword")
    torch.manual_seed(0)
    model = SequenceClassifier(SequenceClassifierConfig(
        vocab_size=len(vocab), num_classes=2, hidden_size=8, embedding_size=6, dropout=0.0)).double().eval()
    enc = model.members[0].encoder
    ids = torch.as_tensor(vocab.encode("good awful"))[None]  # (1, T, K)
    rows = enc.embedding.weight
    want = torch.stack([rows[w[w > 0]].mean(0) for w in ids[0]])[None]  # (1, T, E)
    y, _ = enc.rnn(want)
    got, _ = enc(ids, None, None)
    torch.testing.assert_close(got, y)
    alone = model(ids).logits
    texts = ["good awful", "great fine bad good awful"]
    batch = Examples([vocab.encode(t) for t in texts], np.zeros(2, np.int64)).batch([0, 1])
    torch.testing.assert_close(model(batch.x, lengths=batch.lengths).logits[:1], alone)

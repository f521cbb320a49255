"""Stateful TBPTT batching: contiguous streams, continuity across windows, every target once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.data import IGNORE_INDEX, Streams, build_vocab, encode_file, split_tokens


# -- Streams -------------------------------------------------------------------------------------------------
def _windows(streams):
    return [streams.window(k) for k in range(len(streams))]


def _stream_positions(streams):
    """For each window, the original-array position of every x (and -1 where the row has ended)."""
    out = []
    for k in range(len(streams)):
        p = k * streams.seq_len
        T = streams.window(k)[0].shape[1]
        t = p + np.arange(T)
        pos = streams.starts[:, None] + t[None, :]
        out.append(np.where(t[None, :] < streams.lengths[:, None], pos, -1))
    return out


STREAM_CASES = [(101, 4, 8), (100, 4, 8), (97, 3, 5), (33, 8, 50), (10, 9, 1), (1000, 7, 13), (2, 1, 1)]


@pytest.mark.parametrize(("n", "B", "T"), STREAM_CASES)
def test_streams_cover_every_target_once(n, B, T):
    rng = np.random.default_rng(n * 31 + B)
    tokens = rng.integers(0, 50, size=n).astype(np.uint16)
    streams = Streams(tokens, B, T)
    # Each (input position -> target) pair appears once; positions are recovered from a unique-valued copy.
    index_tokens = np.arange(n, dtype=np.int64)
    positions = Streams(index_tokens, B, T)
    seen = []
    for k in range(len(streams)):
        x, y = streams.window(k)
        px, py = positions.window(k)
        assert x.dtype == y.dtype == torch.int64
        assert x.shape == y.shape
        assert x.shape[0] == B
        assert 1 <= x.shape[1] <= T
        valid = py != IGNORE_INDEX
        assert torch.equal(py[valid], px[valid] + 1)  # y is x shifted by one in the original array
        np.testing.assert_array_equal(x[valid].numpy(), tokens[px[valid].numpy()])
        np.testing.assert_array_equal(y[valid].numpy(), tokens[py[valid].numpy()])
        assert torch.equal(valid, y != IGNORE_INDEX)
        seen.extend(py[valid].tolist())
    assert sorted(seen) == list(range(1, n))  # every one of the n-1 targets, exactly once


@pytest.mark.parametrize(("n", "B", "T"), STREAM_CASES)
def test_streams_rows_are_contiguous_and_continue_across_windows(n, B, T):
    tokens = np.arange(n, dtype=np.int64)  # the token is its own position
    streams = Streams(tokens, B, T)
    lengths = streams.lengths
    assert lengths.sum() == n - 1
    assert lengths.max() - lengths.min() <= 1
    rows = [[] for _ in range(B)]
    for k, (x, y) in enumerate(_windows(streams)):
        assert x.shape[1] == (T if k < len(streams) - 1 else int(lengths.max()) - k * T)
        for b in range(B):
            valid = y[b] != IGNORE_INDEX
            # Valid steps of a row are a prefix of the window: a stream never restarts mid-window.
            assert valid.tolist() == sorted(valid.tolist(), reverse=True)
            rows[b].extend(x[b][valid].tolist())
    starts = []
    for b in range(B):
        row = rows[b]
        assert len(row) == lengths[b]
        # One contiguous piece of the array, in order: window k+1's first input follows window k's last.
        assert row == list(range(row[0], row[0] + len(row)))
        starts.append(row[0])
    # Rows are consecutive pieces: row b+1 starts where row b's targets end.
    assert starts[0] == 0
    for b in range(B - 1):
        assert starts[b + 1] == starts[b] + lengths[b]


def test_streams_window_continuity_explicitly():
    tokens = np.arange(1000, dtype=np.int64)
    streams = Streams(tokens, 5, 16)
    for k in range(len(streams) - 1):
        x0, _ = streams.window(k)
        x1, _ = streams.window(k + 1)
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)


def test_streams_uneven_tail_is_ignored():
    n, B, T = 23, 4, 4  # 22 targets: stream lengths 6, 6, 5, 5
    tokens = np.arange(100, 100 + n, dtype=np.uint16)
    streams = Streams(tokens, B, T)
    assert streams.lengths.tolist() == [6, 6, 5, 5]
    assert len(streams) == 2
    x, y = streams.window(1)
    assert x.shape == (B, 2)  # the last window is short
    assert y[0].tolist() == [105, 106]
    assert y[1].tolist() == [111, 112]
    assert y[2].tolist() == [117, IGNORE_INDEX]
    assert y[3].tolist() == [122, IGNORE_INDEX]
    x0, y0 = streams.window(0)
    assert x0[:, 0].tolist() == [100, 106, 112, 117]
    assert (y0 != IGNORE_INDEX).all()


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_streams_large_ids_never_wrap(dtype):
    # 65436 is -100 as uint16: a where() done in uint16 would turn the ignore index into a real token id.
    wrapped = int(np.array(IGNORE_INDEX).astype(np.uint16))
    assert wrapped == 65436
    n, B, T = 103, 4, 7  # 102 targets: lengths 26, 26, 25, 25
    rng = np.random.default_rng(0)
    values = rng.integers(32768, 65535, size=n)
    values[::5] = wrapped
    values[1::7] = 65535
    tokens = values.astype(dtype)
    streams = Streams(tokens, B, T)
    ignored = cells = 0
    served = []
    for x, y in _windows(streams):
        cells += y.numel()
        assert x.min() >= 0
        valid = y != IGNORE_INDEX
        ignored += int((~valid).sum())
        assert set(y[~valid].tolist()) <= {IGNORE_INDEX}
        assert (y[valid] >= 32768).all()
        served.extend(y[valid].tolist())
    assert ignored == cells - (n - 1) > 0
    assert sorted(served) == sorted(values[1:].tolist())
    assert served.count(wrapped) == int((values[1:] == wrapped).sum())  # real 65436 tokens are still served


@pytest.mark.parametrize(
    ("n", "B", "T"), [(10, 0, 4), (10, 2, 0), (10, -1, 4), (10, 2, -3), (5, 5, 2), (1, 1, 1), (0, 1, 1)]
)
def test_streams_bad_sizes(n, B, T):
    with pytest.raises(ValueError):
        Streams(np.arange(n), B, T)


def test_streams_window_out_of_range():
    streams = Streams(np.arange(50), 3, 4)
    streams.window(len(streams) - 1)
    for k in (-1, len(streams)):
        with pytest.raises(IndexError):
            streams.window(k)


# -- real data -----------------------------------------------------------------------------------------------
def test_tiny_shakespeare(shakespeare):
    vocab, n = build_vocab(shakespeare)
    assert len(vocab) == 65
    assert n == 1_115_394
    assert vocab.chars[0] == "\n"
    assert set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") <= set(vocab.chars)
    ids = encode_file(shakespeare, vocab)
    assert ids.dtype == np.uint16
    assert len(ids) == n
    assert vocab.decode(ids[:14].tolist()) == "First Citizen:"
    train, val = split_tokens(ids)
    assert len(train) == 1_003_854
    assert len(val) == 111_540
    assert len(train) == int(n * 0.9)
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)

"""The CTC recogniser: against a hand-assembled torch.nn model and torch's CTC loss, padding invariance, output
lengths, the frames and batches of rnnkit.data.recognition, length buckets, the feature cache, and a trainer that
learns to read real handwriting lines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnkit.data.batching import length_buckets
from rnnkit.data.recognition import Alphabet, Utterances, load_recognition, read_info
from rnnkit.errors import ConfigError, CorpusError
from rnnkit.models import CTCRecognizer, CTCRecognizerConfig


def small(**kw) -> CTCRecognizer:
    torch.manual_seed(0)
    return CTCRecognizer(CTCRecognizerConfig(**{"input_size": 16, "num_classes": 6, "hidden_size": 8,
                                                "num_layers": 2, "conv_channels": 4, **kw})).eval()


def test_matches_torch_lstm_and_ctc_loss_in_float64():
    """No front end, stride 2: frames stacked in pairs -> nn.LSTM (bidirectional, 2 layers) -> Linear ->
    log_softmax, and the loss is F.ctc_loss with mean reduction."""
    model = small(frontend="none", time_stride=2, num_layers=2).double()
    ref_rnn = model.rnn.to_torch().double().eval()
    ref_head = nn.Linear(16, 6).double()
    ref_head.load_state_dict(model.head.state_dict())
    mean, std = torch.randn(16, dtype=torch.float64), torch.rand(16, dtype=torch.float64) + 0.5
    model.set_scaling(mean, std)
    model.double()
    x = torch.randn(3, 11, 16, dtype=torch.float64)
    targets, target_lengths = torch.tensor([[1, 2, 2], [3, 0, 0], [4, 5, 0]]), torch.tensor([3, 1, 2])
    out = model(x, targets=targets, target_lengths=target_lengths)
    z = ((x - mean) / std.clamp_min(1e-3))[:, :10].reshape(3, 5, 32)
    y, _ = ref_rnn(z)
    want = F.log_softmax(ref_head(y), -1)
    assert torch.allclose(out.logits, want, atol=1e-10)
    loss = F.ctc_loss(want.transpose(0, 1), targets, torch.full((3,), 5), target_lengths, reduction="mean")
    assert torch.allclose(out.loss, loss, atol=1e-10)
    assert model.output_lengths(torch.tensor([11, 4, 9])).tolist() == [5, 2, 4]


@pytest.mark.parametrize("frontend", ["conv", "none"])
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_padding_never_changes_an_output(frontend, stride):
    model = small(frontend=frontend, time_stride=stride)
    x = torch.randn(3, 37, 16) * 3 + 1
    lengths = torch.tensor([37, 22, 9])
    x[1, 22:] = float("nan")  # whatever the padding holds
    x[2, 9:] = 1e6
    out = model(x, lengths=lengths)
    steps = model.output_lengths(lengths)
    for i in range(3):
        alone = model(x[i:i + 1, :lengths[i]]).logits[0]
        assert alone.shape[0] == steps[i]
        assert torch.allclose(alone, out.logits[i, :steps[i]], atol=1e-5), (frontend, stride, i)


def test_gradient_reaches_every_parameter_and_an_impossible_item_is_zero_not_inf():
    model = small().train()
    x = torch.randn(2, 12, 16)
    # item 1 has 6 steps (stride 2) but 9 target characters: impossible -> loss 0 (zero_infinity), not inf
    targets = torch.tensor([[1, 2, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 1, 2, 3, 4]])
    out = model(x, targets=targets, target_lengths=torch.tensor([2, 9]), lengths=torch.tensor([12, 12]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_config_errors():
    for bad, match in ((dict(time_stride=3), "time_stride"), (dict(frontend="rnn"), "front end"),
                       (dict(input_size=0), "input_size"), (dict(num_classes=1), "classes"),
                       (dict(input_size=3), "--frontend none"), (dict(conv_channels=0), "conv_channels"),
                       (dict(cell="tree"), "unknown cell"), (dict(dropout=1.0), "dropout")):
        with pytest.raises(ConfigError, match=match):
            CTCRecognizerConfig(**{"input_size": 16, "num_classes": 6, **bad})
    with pytest.raises(ConfigError, match="features"):
        small()(torch.randn(1, 10, 15))
    with pytest.raises(ConfigError, match="fewer than one output step"):
        small(time_stride=4)(torch.randn(1, 3, 16))


def test_alphabet_and_batches():
    abc = Alphabet("ab c")
    assert abc.num_classes == 5 and abc.encode("a c") == [1, 3, 4] and abc.decode([1, 0, 3, 4]) == "a c"
    with pytest.raises(CorpusError, match="not in the alphabet"):
        abc.encode("abd")
    with pytest.raises(ConfigError, match="distinct"):
        Alphabet("aa")
    frames = [np.full((n, 2), n, dtype=np.float32) for n in (5, 3, 7)]
    u = Utterances(frames, [[1], [2, 3], [1, 2, 3]], ["a", "bc", "abc"], ["x", "y", "z"])
    b = u.batch([2, 1])
    assert b.x.shape == (2, 7, 2) and b.lengths.tolist() == [7, 3] and b.target_lengths.tolist() == [3, 2]
    assert b.targets.tolist() == [[1, 2, 3], [2, 3, 0]] and (b.x[1, 3:] == 0).all() and (b.x[1, :3] == 3).all()
    assert [len(x.lengths) for x in u.batches(2)] == [2, 1]
    assert u.subset([2]).texts == ["abc"] and u.feature_size == 2


def test_length_buckets_cover_everything_once_and_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(10, 500, size=1000)
    batches = length_buckets([lengths], 16, seed=3, epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert [b.tolist() for b in batches] == [b.tolist() for b in length_buckets([lengths], 16, seed=3, epoch=1)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in length_buckets([lengths], 16, seed=3, epoch=2)]
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([lengths[b].max() - lengths[b].min() for b in np.array_split(np.arange(1000), 63)])
    assert spread < 0.2 * random_spread
    with pytest.raises(ConfigError, match="batch size"):
        length_buckets([lengths], 0, 0, 0)


def test_read_info_errors(tmp_path):
    with pytest.raises(CorpusError, match="rnnkit data handwriting"):
        read_info(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(CorpusError, match="cannot be read"):
        read_info(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"kind": "music"}))
    with pytest.raises(CorpusError, match="not one for recognition"):
        read_info(tmp_path)


def test_frames_are_cached_and_a_damaged_cache_is_rebuilt(hw_dataset):
    first = load_recognition(hw_dataset, splits=("val",))
    caches = list((hw_dataset / ".frames").glob("val-*.npz"))
    assert len(caches) == 1
    again = load_recognition(hw_dataset, splits=("val",))
    assert all(np.array_equal(a, b) for a, b in zip(first.splits["val"].frames, again.splits["val"].frames,
                                                      strict=True))
    caches[0].write_bytes(b"damaged")
    rebuilt = load_recognition(hw_dataset, splits=("val",))
    assert all(np.array_equal(a, b) for a, b in zip(first.splits["val"].frames, rebuilt.splits["val"].frames,
                                                      strict=True))
    limited = load_recognition(hw_dataset, splits=("train", "val"), limit=5)
    assert len(limited.splits["train"]) == 5 and len(limited.splits["val"]) == len(first.splits["val"])


def test_frames_read_in_worker_processes_match_reading_each_file_here(hw_dataset):
    """The feature cache built by two worker processes holds, in the split's order, each file's frames as
    ``featurizer`` reads it here (at the cache's float16 precision)."""
    from rnnkit.data.handwriting import read_split
    from rnnkit.data.recognition import featurizer

    for cache in (hw_dataset / ".frames").glob("val-*.npz"):
        cache.unlink()
    parallel = load_recognition(hw_dataset, splits=("val",), workers=2).splits["val"].frames
    read = featurizer(read_info(hw_dataset))
    files = [row[0] for row in read_split(hw_dataset, "val")]
    assert len(parallel) == len(files) > 2
    for frames, path in zip(parallel, files, strict=True):
        assert np.array_equal(frames, read(path).astype(np.float16).astype(np.float32))


def test_trainer_learns_to_read_real_handwriting(hw_dataset, tmp_path):
    """A small recogniser trained for a minute reads held-out text in the training hands with a character error
    rate far below an untrained model's (which emits nothing or noise: about 100%)."""
    from rnnkit.recognize import transcribe
    from rnnkit.train.recognition import RecognitionTrainConfig, RecognitionTrainer, scaling_of

    data = load_recognition(hw_dataset, splits=("train", "val"))
    train = data.splits["train"]
    torch.manual_seed(0)
    model = CTCRecognizer(CTCRecognizerConfig(input_size=train.feature_size, num_classes=data.alphabet.num_classes,
                                              hidden_size=128, num_layers=1, conv_channels=16, time_stride=2,
                                              dropout=0.1))
    model.set_scaling(*scaling_of(train.frames))
    before = transcribe(model, data.splits["val"], data.alphabet)
    config = RecognitionTrainConfig(batch_size=16, lr=3e-3, max_steps=600, eval_interval=300, warmup_steps=10,
                                    device="cpu", seed=0)
    trainer = RecognitionTrainer(model, train, data.splits["val"], data.alphabet, config, tmp_path / "run",
                                 show_progress=False)
    summary = trainer.fit()
    after = transcribe(model, data.splits["val"], data.alphabet)
    assert before.rates["cer"] > 0.9
    assert after.rates["cer"] < 0.6, after.rates
    assert summary["val_cer"] == pytest.approx(after.rates["cer"])
    assert trainer.best_key[0] <= summary["val_cer"]


def test_ngram_next_log_probs_match_its_sequence_probabilities_and_sum_to_one():
    """The beam search's language model: the distribution after a history is the one the n-gram scores sequences
    with (component probabilities and weights), over every token, summing to one — unseen contexts included."""
    from rnnkit.baselines.ngram import NgramModel

    rng = np.random.default_rng(0)
    train = [rng.integers(1, 6, size=rng.integers(3, 9)).tolist() for _ in range(40)]
    model = NgramModel(3, 6).fit(train)
    model.weights = np.array([0.1, 0.2, 0.3, 0.4])
    for history in ([], [1], [2, 3], [5, 5, 5], train[0][:4]):
        logp = model.next_log_probs(history)
        assert logp.shape == (6,) and np.isclose(np.exp(logp).sum(), 1.0)
        for token in range(1, 6):
            probs, seen = model.component_probs([history + [token]])
            w = model.weights * seen[len(history)]
            want = (probs[len(history)] * w).sum() / w.sum()
            assert np.isclose(np.exp(logp[token]), want), (history, token)


def test_a_character_lm_steers_the_beam_toward_real_words():
    """Log-probs that hesitate between 'cat' and 'cet' (the 'e' slightly ahead): the plain beam reads 'cet'; with a
    character model of English-like text it reads 'cat'."""
    from rnnkit import ctc
    from rnnkit.recognize import char_lm

    abc = Alphabet("acet ")
    frames = [{"c": 0.9}, {"a": 0.45, "e": 0.5}, {"t": 0.9}]
    lp = torch.full((3, abc.num_classes), 1e-3)
    for t, probs in enumerate(frames):
        for ch, p in probs.items():
            lp[t, abc.index[ch]] = p
    lp = (lp / lp.sum(1, keepdim=True)).log()
    assert abc.decode(ctc.beam_decode(lp, beam=5)[0]) == "cet"
    lm = char_lm(["a cat ate", "at tea", "a tea cat", "cat"] * 5, ["cat at a tea"], abc, order=3)
    assert abc.decode(ctc.beam_decode(lp, beam=5, lm=lm, lm_weight=1.0)[0]) == "cat"


def _runs(flags: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of each run of True in a 1-D bool tensor."""
    runs, start = [], None
    for i, f in enumerate([*flags.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_masks_cover_bands_and_runs_within_each_length_and_leave_padding():
    from rnnkit.train.recognition import mask_frames

    B, T, C = 64, 120, 40
    x = torch.randn(B, T, C)
    lengths = torch.randint(5, T + 1, (B,))
    fill = torch.linspace(10, 11, C)  # no frame value comes near: every filled cell is recognisable
    torch.manual_seed(0)
    y = mask_frames(x, lengths, fill, freq_masks=2, freq_width=7, time_masks=3, time_width=15)
    filled = y == fill
    assert torch.equal(y[~filled], x[~filled])  # everything else as it was
    widest_seen = 0
    for b in range(B):
        L = int(lengths[b])
        assert not filled[b, L:].any()  # padding is left as it was
        rows = filled[b, :L].all(1)  # frames masked across every feature: the time masks
        cols = filled[b, :L][~rows]  # the other frames show the frequency bands, the same in each
        assert (cols == cols[0]).all()
        assert torch.equal(filled[b, :L], rows[:, None] | cols[0][None, :])
        runs, bands = _runs(rows), _runs(cols[0])
        assert len(runs) <= 3 and all(w <= 3 * min(15, L // 5) for _, w in runs)  # runs may touch or overlap
        assert len(bands) <= 2 and all(w <= 14 for _, w in bands)
        widest_seen = max(widest_seen, max((w for _, w in bands), default=0))
    assert widest_seen >= 5  # widths are drawn up to the limit, not stuck at zero


def test_masks_are_reproducible_from_the_global_seed_and_zero_masks_change_nothing():
    from rnnkit.train.recognition import mask_frames

    x, lengths, fill = torch.randn(4, 50, 8), torch.tensor([50, 40, 30, 10]), torch.zeros(8)
    torch.manual_seed(3)
    a = mask_frames(x, lengths, fill, 1, 4, 2, 10)
    torch.manual_seed(3)
    b = mask_frames(x, lengths, fill, 1, 4, 2, 10)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(mask_frames(x, lengths, fill, 0, 4, 0, 10), x)
    assert torch.equal(mask_frames(x, lengths, fill, 3, 0, 3, 0), x)  # zero widths mask nothing


def test_trainer_masks_training_inputs_only(hw_dataset, tmp_path):
    """With masks on, the model sees the training mean in masked cells while training; validation reads the
    frames as they are."""
    from rnnkit.train.recognition import RecognitionTrainConfig, RecognitionTrainer, scaling_of

    data = load_recognition(hw_dataset, splits=("train", "val"), limit=64)
    train = data.splits["train"]
    model = CTCRecognizer(CTCRecognizerConfig(input_size=train.feature_size, num_classes=data.alphabet.num_classes,
                                              hidden_size=8, num_layers=1, conv_channels=4))
    model.set_scaling(*scaling_of(train.frames))
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].clone())))
    config = RecognitionTrainConfig(batch_size=16, max_steps=2, eval_interval=2, device="cpu", freq_masks=2,
                                    freq_mask_width=6, time_masks=2, time_mask_width=8)
    RecognitionTrainer(model, train, data.splits["val"], data.alphabet, config, tmp_path / "run",
                       show_progress=False).fit()
    mean = model.input_mean
    trained = [x for training, x in seen if training]
    validated = [x for training, x in seen if not training]
    assert len(trained) == 2 and validated
    assert all((x == mean).all(-1).any() for x in trained)  # whole masked frames in every training batch
    assert not any((x == mean).all(-1).any() for x in validated)
    with pytest.raises(ConfigError, match="--time-masks"):
        RecognitionTrainConfig(time_masks=-1)

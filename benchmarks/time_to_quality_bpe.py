"""Time to quality with subword tokens: `rnnkit train`'s model and trainer fed BPE ids instead of characters.

    python benchmarks/time_to_quality_bpe.py --minutes 10 --vocab 256 [--set dropout=0.2 --set weight_drop=0.3]

An experiment, not a feature: `rnnkit train` is character-level. The question is whether fewer, longer tokens
(each step of the same 2x512 LSTM covers ~2 characters) reach a lower validation loss per *character* in the
same wall time. The text is split where `rnnkit train` splits it (the last 10% of the characters validate); a
`tokenizers` BPE model is trained on the training part only and encodes each part separately, losslessly (checked).
Validation loss per token, state carried over the same 16 streams, is divided by the validation part's mean
characters per token, which gives nats per character of the same validation text as the character model's.
Needs the `translate` extra (`tokenizers`). Run it alone on the machine, like time_to_quality.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_SHAKESPEARE, save, table  # noqa: E402

from rnnkit.data import split_tokens  # noqa: E402
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig  # noqa: E402
from rnnkit.train import TrainConfig, Trainer, distributed, resolve_device  # noqa: E402
from rnnkit.train.tbptt import loss_sums  # noqa: E402


def bpe(text: str, train_text: str, vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_next")  # " word" pieces; newlines stay inside
    tok.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=sorted(set(text)), limit_alphabet=len(set(text)), show_progress=False))
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=TINY_SHAKESPEARE)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--vocab", type=int, default=256, help="BPE vocabulary size")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a LanguageModelConfig or TrainConfig field, e.g. dropout=0.2 (JSON value)")
    parser.add_argument("--tag", help="write results/time_to_quality_bpe-TAG.json")
    args = parser.parse_args()
    fields = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    model_flags = {k: v for k, v in fields.items() if k in LanguageModelConfig.__dataclass_fields__}
    train_flags = {k: v for k, v in fields.items() if k not in model_flags}

    text = Path(args.data).read_text(encoding="utf-8")
    n_train = len(split_tokens(np.arange(len(text)))[0])  # the character model's split, to the character
    train_text, val_text = text[:n_train], text[n_train:]
    tok = bpe(text, train_text, args.vocab)
    pieces = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    train_ids, val_ids = (np.array(tok.encode(t).ids, dtype=np.int64) for t in (train_text, val_text))
    assert "".join(pieces[i] for i in val_ids) == val_text and "".join(pieces[i] for i in train_ids) == train_text
    chars_per_token = len(val_text) / len(val_ids)
    print(f"BPE {tok.get_vocab_size()}: {len(train_ids):,} train / {len(val_ids):,} validation tokens, "
          f"{len(train_text) / len(train_ids):.3f} / {chars_per_token:.3f} characters per token", flush=True)

    torch.manual_seed(train_flags.get("seed", TrainConfig.seed))
    model = LanguageModel(LanguageModelConfig(vocab_size=tok.get_vocab_size(), **model_flags))
    config = TrainConfig(minutes=args.minutes, **train_flags)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        trainer = Trainer(model, train_ids, val_ids, config, run_dir, show_progress=False,
                          ranks=distributed.setup(resolve_device(config.device)))
        summary = trainer.fit()
        with open(run_dir / "metrics.csv") as f:
            curve = [(int(r["step"]), float(r["elapsed_s"]), float(r["val_loss"]) / chars_per_token)
                     for r in csv.DictReader(f) if r["val_loss"]]
        shutil.rmtree(run_dir)
    total, count = loss_sums(trainer.model, val_ids, config.eval_streams, trainer.device)
    row = {"vocab": tok.get_vocab_size(), "flags": " ".join(args.set) or "(defaults)", "steps": summary["step"],
           "tokens/s": round(summary["tokens"] / summary["elapsed_s"]), "chars/token": round(chars_per_token, 4),
           "final val": total / count / chars_per_token, "best val": min(v for _, _, v in curve)}
    print(f"Tiny Shakespeare validation loss (nats/char) after {args.minutes:g} minutes, BPE tokens")
    print(table([row], list(row)))
    print("step, elapsed s, validation nats/char:", "; ".join(f"{s} {t:.0f} {v:.4f}" for s, t, v in curve))
    name = "time_to_quality_bpe" + (f"-{args.tag}" if args.tag else "")
    print("wrote", save(name, {"minutes": args.minutes, "row": row, "curve": curve}))


if __name__ == "__main__":
    main()

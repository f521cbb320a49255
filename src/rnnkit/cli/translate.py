"""``rnnkit translate train|translate|eval``: sequence to sequence — Spanish → English with an attentional
encoder–decoder (any ``English<TAB>Spanish`` pairs file, e.g. Tatoeba's spa.txt)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rnnkit import __version__
from rnnkit.cli.common import (
    add_load_args,
    add_predictions_arg,
    add_run_args,
    budget,
    info,
    new_run_dir,
    resumed_config,
    start_run,
    stdin_lines,
    stopped,
    write_jsonl,
)
from rnnkit.cliargs import Parser, add_dataclass_args, given, output_file
from rnnkit.errors import ConfigError

KIND = "seq2seq"
DATA_FLAGS = ("data", "tokens", "vocab_size", "lowercase", "test_percent", "val_percent", "max_length")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from rnnkit.models.seq2seq import Seq2SeqConfig
    from rnnkit.train.batches import BatchTrainConfig

    group = sub.add_parser("translate", help="sequence to sequence: translate Spanish to English",
                           description="Train, apply and score an attentional encoder-decoder translator.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("train", help="train a translator on English<TAB>Spanish pairs",
                         description="Train on a file of English<TAB>Spanish lines (e.g. ../shared/data/spa-eng/"
                                     "spa.txt); the Spanish side is translated into the English side.")
    p.add_argument("--data", metavar="PATH", help="the pairs file")
    p.add_argument("--tokens", choices=("word", "bpe"), help="word tokens, or BPE subwords (default: word)")
    p.add_argument("--vocab-size", type=int, help="tokens per side at most (default: 8000)")
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                   help="lowercase both sides (default: yes)")
    p.add_argument("--test-percent", type=int, help="held out for testing, chosen by CRC32 of the Spanish (5)")
    p.add_argument("--val-percent", type=int, help="held out to pick the best checkpoint (default: 2)")
    p.add_argument("--max-length", type=int, help="training pairs with a longer side are dropped (default: 60)")
    add_run_args(p, "translate-")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, Seq2SeqConfig, "model"),
                   train_flags=add_dataclass_args(p, BatchTrainConfig, "training", {
                       "batch_size": 64, "epochs": "10 when neither --max-steps nor --minutes is given"}))

    p = verbs.add_parser("translate", help="translate sentences (arguments or stdin lines)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("inputs", nargs="*", metavar="SENTENCE", help="Spanish sentences (default: one per stdin line)")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size; 1 is greedy (default: 5)")
    p.add_argument("--alpha", type=float, default=0.6, help="length penalty ((5+len)/6)^alpha (default: 0.6)")
    p.add_argument("--attention-png", type=output_file(".png"), metavar="FILE",
                   help="draw the attention matrix of the first sentence (its greedy translation)")
    p.add_argument("--json", action="store_true", help="one JSON object per sentence")
    add_load_args(p)
    p.set_defaults(func=cmd_translate, extra_positionals="inputs")

    p = verbs.add_parser("eval", help="BLEU (sacreBLEU) on the test split, greedy and beam search")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size (default: 5)")
    p.add_argument("--alpha", type=float, default=0.6, help="length penalty alpha (default: 0.6)")
    p.add_argument("--examples", type=int, default=10, help="test translations to print with their references")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_predictions_arg(p, "every test pair's source, reference, greedy and beam translations")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import FORMAT_VERSION, build_model
    from rnnkit.data.translation import Tokenizer, TranslationSpec, load_translation
    from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from rnnkit.train.batches import BatchTrainConfig, TranslationTrainer

    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.resume:
        run_dir, config = resumed_config(args, KIND, DATA_FLAGS, model_flags)
        spec = TranslationSpec(**config["data"]["spec"])
        data = load_translation(spec, Tokenizer.from_dict(config["src_vocab"]),
                                Tokenizer.from_dict(config["tgt_vocab"]), verify=True)
        train_config = BatchTrainConfig.resumed(config["train"], train_flags)
        model = build_model(config)
    else:
        if not args.data:
            raise ConfigError("no data given — pass --data PATH, a file of English<TAB>Spanish lines (e.g. "
                              "../shared/data/spa-eng/spa.txt)")
        run_dir = new_run_dir(args, "translate")
        spec = TranslationSpec(args.data, **{f: getattr(args, f) for f in DATA_FLAGS[1:]
                                            if getattr(args, f) is not None})
        train_config = BatchTrainConfig(**{"batch_size": 64, "lr": 2e-3, **train_flags})
        if not (train_config.epochs or train_config.max_steps or train_config.minutes):
            train_config.epochs = 10.0
        Seq2SeqConfig(src_vocab_size=1, tgt_vocab_size=1, **model_flags)  # a bad flag fails before the data loads
        t0 = time.perf_counter()
        data = load_translation(spec)
        info(f"data: {data.description} ({time.perf_counter() - t0:.0f} s)")
        torch.manual_seed(train_config.seed)
        model = Seq2Seq(Seq2SeqConfig(src_vocab_size=len(data.src), tgt_vocab_size=len(data.tgt), **model_flags))
        config = {
            "format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
            "model": model.config.to_dict(), "src_vocab": data.src.to_dict(), "tgt_vocab": data.tgt.to_dict(),
            "data": {"spec": vars(spec), "description": data.description},
        }
    trainer = TranslationTrainer(model, data.train, data.val, train_config, run_dir, show_progress=not args.quiet)
    start_run(trainer, config, run_dir, bool(args.resume))
    m = model.config
    info(f"model: bi{m.cell.upper()} encoder, {m.cell.upper()} decoder, {m.num_layers}x{m.hidden_size}, "
         f"{m.attention} attention{', input feeding' if m.input_feeding else ''}, {model.num_parameters():,} "
         f"parameters; {len(data.train):,} training pairs, budget {budget(train_config)}, batch "
         f"{train_config.batch_size}; run dir {run_dir}")
    summary = trainer.fit()
    if stopped(summary, "rnnkit translate train", run_dir):
        return 130
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s; validation loss "
         f"{summary['val_loss']:.4f} nats/token (best {trainer.best_key[0]:.4f}); "
         f"score it with: rnnkit translate eval {run_dir}")
    return 0


# -- shared --------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace):
    from rnnkit.checkpoint import load_weights, weights_read
    from rnnkit.data.translation import Tokenizer
    from rnnkit.train import resolve_device

    model, config = load_weights(args.run_dir, args.weights, resolve_device(args.device), kind=KIND)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    return model, Tokenizer.from_dict(config["src_vocab"]), Tokenizer.from_dict(config["tgt_vocab"]), config


def _check_beam(beam: int) -> None:
    from rnnkit.translate import MAX_BEAM

    if not 1 <= beam <= MAX_BEAM:
        raise ConfigError(f"--beam must be 1..{MAX_BEAM} (got {beam}) — 1 is greedy; beams wider than ~10 rarely "
                          "raise BLEU")


def _decode_all(model, src_ids: list[list[int]], beam: int, alpha: float, batch: int = 64) -> list[list[int]]:
    from rnnkit import translate as tr

    batch = max(1, min(batch, tr.MAX_BEAM // beam))  # at most MAX_BEAM hypotheses (and memory copies) at once
    out: list[list[int]] = []
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))  # similar lengths batch together
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        chunk = [src_ids[i] for i in idx]
        got = tr.greedy(model, chunk) if beam == 1 else tr.beam(model, chunk, beam, alpha=alpha)
        out += list(zip(idx, got, strict=True))
    return [seq for _, seq in sorted(out)]


# -- translate -----------------------------------------------------------------------------------------------
def cmd_translate(args: argparse.Namespace) -> int:
    from rnnkit import translate as tr

    _check_beam(args.beam)
    model, src, tgt, _ = _load(args)
    sentences = args.inputs or stdin_lines()
    if not sentences:
        raise ConfigError("nothing to translate — pass Spanish sentences as arguments or lines on stdin")
    blank = [i for i, s in enumerate(sentences, 1) if not s.strip()]
    if blank:
        raise ConfigError(f"sentence {blank[0]} is empty — pass Spanish text (a model would still write "
                          "something for it)")
    ids = [src.encode(s) for s in sentences]
    outputs = _decode_all(model, ids, args.beam, args.alpha)
    for sentence, out in zip(sentences, outputs, strict=True):
        text = tgt.decode(out)
        print(json.dumps({"source": sentence, "translation": text}, ensure_ascii=False) if args.json else text)
    if args.attention_png:
        from rnnkit.plots import plot_attention

        seqs, weights = tr.greedy(model, ids[:1], attention=True)
        def label(pieces: list[str]) -> list[str]:  # BPE marks a word's first piece with "▁": drop the marker
            return [p[1:] if p.startswith("\u2581") and len(p) > 1 else p for p in pieces]

        src_tokens = label(src.pieces(ids[0]))
        out_tokens = label(tgt.pieces(seqs[0])) + (["</s>"] if weights[0].shape[0] > len(seqs[0]) else [])
        plot_attention(weights[0].numpy(), src_tokens, out_tokens, args.attention_png,
                       title=f"{sentences[0]}  →  {tgt.decode(seqs[0])}")
        info(f"wrote {args.attention_png}")
    return 0


# -- eval ----------------------------------------------------------------------------------------------------
def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``n`` (the file runs from short sentences to long ones)."""
    k = max(0, min(k, n))
    return [round(i * (n - 1) / max(k - 1, 1)) for i in range(k)] if k > 1 else list(range(k))


def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit import translate as tr
    from rnnkit.checkpoint import check_writable
    from rnnkit.data.translation import TranslationSpec, load_translation

    _check_beam(args.beam)
    model, src, tgt, config = _load(args)
    if args.predictions:
        check_writable(args.predictions)  # before the decoding, which takes minutes on a large test split
    data = load_translation(TranslationSpec(**config["data"]["spec"]), src, tgt, verify=True)
    if not data.test_sources:
        raise ConfigError(f"the test split of {config['data']['spec']['path']} is empty — train on more pairs or "
                          "with a larger --test-percent")
    ids = [src.encode(s) for s in data.test_sources]
    t0 = time.perf_counter()
    greedy = [tgt.decode(s) for s in _decode_all(model, ids, 1, args.alpha)]
    t1 = time.perf_counter()
    beamed = [tgt.decode(s) for s in _decode_all(model, ids, args.beam, args.alpha)]
    t2 = time.perf_counter()
    refs, lower = data.test_references, data.src.lowercase  # a lower-cased model is scored case-insensitively
    result = {"bleu": tr.bleu(beamed, refs, lower), "bleu_greedy": tr.bleu(greedy, refs, lower),
              "bleu_beam": tr.bleu(beamed, refs, lower), "bleu_case_insensitive": lower,
              "beam_size": args.beam, "alpha": args.alpha, "test_pairs": len(refs),
              "greedy_s": round(t1 - t0, 1), "beam_s": round(t2 - t1, 1), "weights": args.weights,
              "examples": [{"source": data.test_sources[i], "reference": refs[i], "greedy": greedy[i],
                            "beam": beamed[i]} for i in _spread(len(refs), args.examples)]}
    if args.predictions:
        write_jsonl(args.predictions, ({"source": s, "reference": r, "greedy": g, "beam": b}
                                       for s, r, g, b in zip(data.test_sources, refs, greedy, beamed, strict=True)))
        result["predictions"] = str(args.predictions)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"BLEU {result['bleu']:.2f} (beam {args.beam}), greedy {result['bleu_greedy']:.2f}, on "
          f"{len(refs):,} test pairs ({args.weights} weights{', case-insensitive' if lower else ''})")
    for e in result["examples"]:
        print(f"  {e['source']}\n    reference: {e['reference']}\n    beam:      {e['beam']}")
    return 0

"""``rnnkit recognize train|predict|eval``: many-to-many without alignment — handwriting lines and speech read
by a CTC recogniser (datasets from ``rnnkit data handwriting|speech``)."""

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
    stopped,
    write_jsonl,
)
from rnnkit.cliargs import DEFAULT_EPOCHS, EPOCHS_WITHOUT_BUDGET, Parser, add_dataclass_args, given, output_file
from rnnkit.errors import ConfigError

KIND = "ctc_recognizer"
DATA_FLAGS = ("data", "limit")
SEEN_SPLIT = {"handwriting": "test_seen", "speech": "test_seen_voice"}  # the test text in training hands / voices


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from rnnkit.models.recognizer import CTCRecognizerConfig
    from rnnkit.train.recognition import RecognitionTrainConfig

    group = sub.add_parser("recognize", help="CTC recognition: handwriting lines and speech",
                           description="Train, apply and score a CTC recogniser (frames in, characters out).")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("train", help="train a recogniser on a dataset built by rnnkit data handwriting|speech",
                         description="Train on the train split of a built dataset; the val split picks the best "
                                     "checkpoint by character error rate.")
    p.add_argument("--data", type=Path, metavar="DIR", help="a dataset directory (rnnkit data handwriting|speech)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training lines (quick runs)")
    p.add_argument("--init-from", type=Path, metavar="RUN_DIR",
                   help="start from the best weights of another recogniser run (its model, input scaling and "
                        "alphabet; the data may differ) with a fresh optimizer and schedule: fine-tuning, or "
                        "continuing a run whose optimizer state is gone")
    add_run_args(p, "recognize-")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, CTCRecognizerConfig, "model"),
                   train_flags=add_dataclass_args(p, RecognitionTrainConfig, "training",
                                                         {"epochs": EPOCHS_WITHOUT_BUDGET}))

    p = verbs.add_parser("predict", help="transcribe images (handwriting) or WAV files (speech)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("inputs", nargs="+", type=Path, metavar="FILE", help="PNG/JPEG images or WAV files")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="prefix beam search width; 1 is greedy")
    _add_lm_args(p)
    p.add_argument("--png", type=output_file(".png"), metavar="FILE",
                   help="draw the first input with its best path under it (where each character was emitted)")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    add_load_args(p)
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("eval", help="character and word error rates on the held-out test split")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--data", type=Path, metavar="DIR", help="the dataset (default: the one the run trained on)")
    p.add_argument("--split", help="split to score (default: test, and the same text in training hands/voices)")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="prefix beam search width; 1 is greedy")
    _add_lm_args(p)
    p.add_argument("--examples", type=int, default=5, help="transcripts to print with their references")
    p.add_argument("--png", type=output_file(".png"),
                   metavar="FILE", help="draw the first scored line with its best path")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_predictions_arg(p, "each line of the first split scored: its condition, truth and transcript")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)


def _add_lm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm", type=Path, metavar="RUN_DIR",
                   help="with --beam: weigh prefixes by a character language model, a run of rnnkit train on lines of "
                        "the recogniser's text (rnnkit data lm-text writes them)")
    p.add_argument("--lm-order", type=int, default=0, metavar="N",
                   help="with --beam: weigh prefixes by a character N-gram of the dataset's training and validation "
                        "text instead (0: none)")
    p.add_argument("--lm-text", type=Path, metavar="FILE",
                   help="with --lm-order: the n-gram also reads the sentences of FILE that the dataset's text split "
                        "puts in its training part (e.g. the corpus the dataset was built from); held-out sentences "
                        "are never read")
    p.add_argument("--lm-weight", type=float, help="with --lm or --lm-order: weight of the language model's "
                                                   "log-probability (default: 0.5)")
    p.add_argument("--char-bonus", type=float, help="with --lm or --lm-order: score added per emitted character "
                                                    "(default: 0)")
    p.add_argument("--lm-end", action="store_true",
                   help="with --lm or --lm-order: the language model also scores the end of the line (weighted like "
                        "its other terms), so a transcript that stops mid-sentence pays for it")


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import FORMAT_VERSION, build_model
    from rnnkit.data.recognition import load_recognition
    from rnnkit.models.recognizer import CTCRecognizer, CTCRecognizerConfig
    from rnnkit.train.recognition import RecognitionTrainConfig, RecognitionTrainer, scaling_of

    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit must be positive (got {args.limit}) — e.g. --limit 1000")
    if args.resume:
        run_dir, config = resumed_config(args, KIND, (*DATA_FLAGS, "init_from"), model_flags)
        data = load_recognition(config["data"]["root"], limit=config["data"]["limit"], progress=not args.quiet)
        saved = config["data"]["info"]
        if any(data.info.get(k) != saved.get(k) for k in ("text_sha256", "spec", "alphabet")):
            raise ConfigError(f"the dataset in {config['data']['root']} changed since the run started — train a new "
                              "run on it")
        train_config = RecognitionTrainConfig.resumed(config["train"], train_flags)
        model = build_model(config)
    else:
        if not args.data:
            raise ConfigError("no data given — pass --data DIR, a dataset built by rnnkit data handwriting|speech")
        run_dir = new_run_dir(args, "recognize")
        train_config = RecognitionTrainConfig(**{"batch_size": 32, "lr": 2e-3, **train_flags})
        if not (train_config.epochs or train_config.max_steps or train_config.minutes):
            train_config.epochs = DEFAULT_EPOCHS
        CTCRecognizerConfig(input_size=32, num_classes=2, **model_flags)  # a bad flag fails before the data loads
        init = _init_from(args.init_from, args.data, model_flags) if args.init_from else None
        t0 = time.perf_counter()
        data = load_recognition(args.data, limit=args.limit, progress=not args.quiet)
        train = data.splits["train"]
        info(f"data: {data.kind}, {len(train):,} training and {len(data.splits['val']):,} validation lines, "
             f"{train.feature_size} features per frame, {len(data.alphabet.chars)} characters "
             f"({time.perf_counter() - t0:.0f} s)")
        torch.manual_seed(train_config.seed)
        if init is not None:
            model = init
        else:
            model = CTCRecognizer(CTCRecognizerConfig(input_size=train.feature_size,
                                                      num_classes=data.alphabet.num_classes, **model_flags))
            model.set_scaling(*scaling_of(train.frames))
        config = {
            "format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
            "model": model.config.to_dict(),
            "data": {"root": str(Path(args.data).resolve()), "limit": args.limit, "info": data.info},
            "init_from": str(Path(args.init_from).resolve()) if args.init_from else None,
        }
    trainer = RecognitionTrainer(model, data.splits["train"], data.splits["val"], data.alphabet, train_config,
                                 run_dir, show_progress=not args.quiet)
    start_run(trainer, config, run_dir, bool(args.resume))
    m = model.config
    info(f"model: {m.frontend} front end (stride {m.time_stride}), {'bi' if m.bidirectional else ''}"
         f"{m.cell.upper()} {m.num_layers}x{m.hidden_size}, {model.num_parameters():,} parameters; "
         f"budget {budget(train_config)}, batch {train_config.batch_size}; run dir {run_dir}")
    summary = trainer.fit()
    if stopped(summary, "rnnkit recognize train", run_dir):
        return 130
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s; validation CER "
         f"{summary['val_cer']:.2%} (best {trainer.best_key[0]:.2%}); score it with: rnnkit recognize eval {run_dir}")
    return 0


def _init_from(run_dir: Path, data_root: Path, model_flags: dict):
    """The best weights of the recogniser run in ``run_dir``, in training mode, checked (before any frames load)
    against the dataset in ``data_root``: the same kind, characters and features, and no model flag that would
    change the architecture."""
    from rnnkit.checkpoint import load_weights
    from rnnkit.data.recognition import read_info

    model, config = load_weights(run_dir, "best", "cpu", kind=KIND)
    changed = [f"--{k.replace('_', '-')}" for k, v in model_flags.items() if config["model"].get(k) != v]
    if changed:
        raise ConfigError(f"{changed[0]} cannot be given with --init-from: the model is the one in {run_dir} — "
                          "drop it, or train from scratch")
    info, trained_on = read_info(data_root), config["data"]["info"]
    for key, what in (("kind", "kind of data"), ("alphabet", "alphabet"), ("features", "frame features")):
        if info.get(key) != trained_on.get(key):
            raise ConfigError(f"{run_dir} was trained on another {what} than {data_root} — --init-from needs a "
                              "run trained on the same kind of dataset")
    return model.train()


# -- shared --------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace):
    from rnnkit.checkpoint import load_weights
    from rnnkit.data.recognition import Alphabet
    from rnnkit.train import resolve_device

    if args.beam < 1:
        raise ConfigError(f"--beam must be >= 1 (got {args.beam}) — 1 is greedy")
    device = resolve_device(args.device)
    model, config = load_weights(args.run_dir, args.weights, device, kind=KIND)
    return model, Alphabet(config["data"]["info"]["alphabet"]), config, device


def _check_lm_flags(args: argparse.Namespace) -> None:
    """Refuse language-model flags that do not go together, before any data is read; fill in the defaults of
    ``--lm-weight`` and ``--char-bonus``. Call once, then ``_language_model``."""
    for flag in ("lm_text", "lm_weight", "char_bonus", "lm_end"):
        if (getattr(args, flag) is not None if flag != "lm_end" else args.lm_end) and not (args.lm_order or args.lm):
            raise ConfigError(f"--{flag.replace('_', '-')} shapes the language model — give --lm RUN_DIR or "
                              "--lm-order too, e.g. --beam 10 --lm-order 5")
    args.lm_weight = 0.5 if args.lm_weight is None else args.lm_weight
    args.char_bonus = 0.0 if args.char_bonus is None else args.char_bonus
    if args.lm and args.lm_order:
        raise ConfigError("--lm and --lm-order are two language models — give one of them")
    if not (args.lm or args.lm_order):
        return
    if args.lm_order < 0:
        raise ConfigError(f"--lm-order must be >= 1 (got {args.lm_order}) — e.g. --beam 10 --lm-order 5")
    if args.beam < 2:
        raise ConfigError(f"a language model weighs the beam search's prefixes — give --beam >= 2 (got {args.beam}), "
                          "e.g. --beam 10")
    if args.lm and not (args.lm / "config.json").is_file():
        raise ConfigError(f"--lm {args.lm} holds no run (no config.json) — pass the directory of an `rnnkit train` "
                          "run (its --out)")
    if args.lm and args.lm_text is not None:
        raise ConfigError("--lm-text is text for the n-gram (--lm-order); the recurrent LM of --lm read its own "
                          "text when it was trained — drop --lm-text")
    if args.lm_text is not None:
        try:
            args.lm_text.open("rb").close()
        except OSError as e:
            raise ConfigError(f"{args.lm_text} cannot be read ({e.strerror}) — pass a readable text file") from None


def _language_model(args: argparse.Namespace, root, alphabet, device, tuning: bool):
    """The beam search's language model from ``--lm`` or ``--lm-order`` (None without either), its flags checked
    by ``_check_lm_flags``. ``tuning``: the validation text is being scored, so the n-gram must not read it."""
    if not (args.lm or args.lm_order):
        return None
    if args.lm:
        from rnnkit.checkpoint import load_run
        from rnnkit.data.recognition import transcripts
        from rnnkit.errors import CorpusError
        from rnnkit.recognize import RecurrentCharLM

        try:  # what the LM must have read: every character of the recogniser's training text
            required = "".join(sorted(set("".join(transcripts(root, "train")))))
        except CorpusError:  # the dataset is not on this machine (predict): the newline only
            required = ""
        model, vocab, _ = load_run(args.lm, "best", device)
        lm = RecurrentCharLM(model, vocab, alphabet, required)
        if lm.missing:
            info(f"the language model never read {lm.missing!r} (outside the recogniser's training text): they "
                 "score as its least likely character")
        return lm
    from rnnkit.data.recognition import lm_sentences, transcripts
    from rnnkit.recognize import char_lm

    # scoring the validation text (to choose --lm-weight), the LM must not have read it: it is tuned on a tenth
    # of the training text instead (of the corpus's sentences with --lm-text: the transcripts are drawn from them)
    train_text = lm_sentences(root, args.lm_text) if args.lm_text else transcripts(root, "train")
    if tuning:
        train_text, val_text = [s for i, s in enumerate(train_text) if i % 10], train_text[::10]
    else:
        train_text += transcripts(root, "train") if args.lm_text else []
        val_text = transcripts(root, "val")
    chars = sum(len(t) for t in train_text)
    info(f"fitting a {args.lm_order}-gram character model on {len(train_text):,} sentences ({chars:,} characters)"
         + (f" of {args.lm_text}: minutes for a large corpus" if args.lm_text else ""))
    return char_lm(train_text, val_text, alphabet, args.lm_order)


def _draw(model, utterances, result, alphabet, data_info: dict, path: Path, title: str) -> None:
    from rnnkit.recognize import plot_alignment

    plot_alignment(utterances.frames[0], result.paths[0], alphabet, model.config.time_stride, path, title=title,
                   kind=data_info["kind"])
    info(f"wrote {path}")


# -- predict -------------------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.data.recognition import Utterances, featurizer
    from rnnkit.recognize import transcribe

    if args.png is not None and any(p.resolve() == args.png.resolve() for p in args.inputs):
        raise ConfigError(f"--png {args.png} is one of the inputs — the drawing would replace it; name another file")
    _check_lm_flags(args)
    model, alphabet, config, device = _load(args)
    featurize = featurizer(config["data"]["info"])
    frames = []
    for path in args.inputs:
        if not path.is_file():
            raise ConfigError(f"{path} is not a file — pass images (handwriting) or WAV files (speech)")
        frames.append(featurize(path))
    utterances = Utterances(frames, [[] for _ in frames])
    lm = _language_model(args, config["data"]["root"], alphabet, device, tuning=False)
    result = transcribe(model, utterances, alphabet, device, beam=args.beam, references=False, lm=lm,
                        lm_weight=args.lm_weight, char_bonus=args.char_bonus, lm_end=args.lm_end)
    for path, text in zip(args.inputs, result.texts, strict=True):
        print(json.dumps({"file": str(path), "text": text}, ensure_ascii=False) if args.json else text)
    if args.png:
        _draw(model, utterances, result, alphabet, config["data"]["info"], args.png,
              f"{args.inputs[0].name}: {result.texts[0]}")
    return 0


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import check_writable
    from rnnkit.data.recognition import load_recognition
    from rnnkit.recognize import transcribe

    _check_lm_flags(args)
    if args.predictions:
        check_writable(args.predictions)  # before the decoding
    model, alphabet, config, device = _load(args)
    from rnnkit.data.recognition import read_info

    root = args.data or config["data"]["root"]
    kind = config["data"]["info"]["kind"]
    present = read_info(root)["splits"]
    splits = [args.split] if args.split else ["test"] + [s for s in (SEEN_SPLIT[kind],) if s in present]
    data = load_recognition(root, splits=splits, progress=not args.json)
    if data.alphabet.chars != alphabet.chars:
        raise ConfigError(f"the dataset in {root} has another alphabet than the model — score it on the dataset "
                          "it was trained on")
    lm = _language_model(args, root, alphabet, device, tuning="val" in splits)
    result = {"kind": kind, "split": splits[0], "beam": args.beam, "lm": str(args.lm) if args.lm else None,
              "lm_order": args.lm_order, "lm_weight": args.lm_weight if lm else 0.0,
              "char_bonus": args.char_bonus if lm else 0.0, "lm_end": bool(lm and args.lm_end)}
    for split in splits:
        t0 = time.perf_counter()
        got = transcribe(model, data.splits[split], alphabet, device, beam=args.beam, lm=lm,
                         lm_weight=args.lm_weight, char_bonus=args.char_bonus, lm_end=args.lm_end)
        rates = {"cer": got.rates["cer"], "wer": got.rates["wer"], "lines": len(data.splits[split]),
                 "seconds": round(time.perf_counter() - t0, 1)}
        if split == splits[0]:
            result.update(rates, loss=got.loss)
            first = got
            if args.beam > 1:
                greedy = transcribe(model, data.splits[split], alphabet, device)
                result.update(cer_greedy=greedy.rates["cer"], wer_greedy=greedy.rates["wer"])
        else:
            result.update({f"{k}_{split}": v for k, v in rates.items()})
    test = data.splits[splits[0]]
    if args.predictions:
        write_jsonl(args.predictions, ({"condition": c, "truth": t, "prediction": p} for c, t, p in zip(
            test.conditions or [None] * len(test), test.texts, first.texts, strict=True)))
        result["predictions"] = str(args.predictions)
    if args.png:
        _draw(model, test, first, alphabet, data.info, args.png,
              f"{test.conditions[0]}: {first.texts[0]!r} (truth {test.texts[0]!r})")
    if args.json:
        print(json.dumps(result))
        return 0
    for i in range(min(args.examples, len(test))):
        print(f"{test.conditions[i]}\n  truth: {test.texts[i]}\n  read:  {first.texts[i]}")
    print(f"{splits[0]}: CER {result['cer']:.2%}, WER {result['wer']:.2%} over {result['lines']} lines"
          + (f" (greedy: CER {result['cer_greedy']:.2%})" if args.beam > 1 else ""))
    for split in splits[1:]:
        print(f"{split}: CER {result[f'cer_{split}']:.2%}, WER {result[f'wer_{split}']:.2%}")
    return 0

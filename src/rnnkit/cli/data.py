"""``rnnkit data handwriting|speech``: build the recognition datasets on this machine, from real components
(Debian's handwriting fonts, espeak-ng's voices, a real text corpus), with a fixed seed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit.cli.common import info
from rnnkit.cliargs import Parser, output_file, seed
from rnnkit.errors import ConfigError

DEFAULT_TEXT = "../shared/data/spa-eng/spa.txt"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("data", help="build datasets: handwriting lines, speech",
                           description="Build a recognition dataset into a directory (deterministic: same flags, "
                                       "same files). rnnkit recognize train --data DIR trains on it.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("handwriting", help="text lines drawn in handwriting fonts, one PNG per line",
                         description="Corpus sentences drawn in Debian's handwriting fonts with slant, jitter, elastic "
                                     "distortion, stroke width, blur and noise; the test lines use a held-out "
                                     "connected script (DancingScript) and held-out text.")
    p.add_argument("out", type=Path, metavar="DIR")
    p.add_argument("--text", type=Path, default=None, help=f"UTF-8 corpus, one sentence per line (default: "
                                                            f"{DEFAULT_TEXT})")
    p.add_argument("--train-lines", type=int, default=12000)
    p.add_argument("--val-lines", type=int, default=600)
    p.add_argument("--test-lines", type=int, default=600)
    p.add_argument("--no-test-seen", action="store_true", help="skip the test lines drawn in the training fonts")
    p.add_argument("--height", type=int, default=32, help="pixel rows of every line (default: 32)")
    p.add_argument("--max-chars", type=int, default=40, help="characters per line at most (default: 40)")
    p.add_argument("--test-font", default="DancingScript", help="held-out font (file-name prefix)")
    p.add_argument("--font-dir", action="append", type=Path, metavar="DIR",
                   help="where fonts are (repeatable; default: /usr/share/fonts)")
    p.add_argument("--augment", default="strong", help="training distortion: none, mild or strong")
    p.add_argument("--eval-augment", default="mild", help="validation/test distortion (default: mild)")
    p.add_argument("--seed", type=seed, default=20240610)
    p.add_argument("--workers", type=int, default=None, help="processes drawing lines (default: the cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_handwriting)

    p = verbs.add_parser("speech", help="sentences spoken by espeak-ng voices in noise, one WAV per sentence",
                         description="Corpus sentences synthesised by espeak-ng (accents, voice variants, speed, "
                                     "pitch) and mixed with noise at 5-20 dB SNR; the test split is an accent and "
                                     "voice variants never used in training, on held-out text.")
    p.add_argument("out", type=Path, metavar="DIR")
    p.add_argument("--text", type=Path, default=None, help=f"sentences (default: {DEFAULT_TEXT})")
    p.add_argument("--train", type=int, default=6000, help="training utterances (default: 6000)")
    p.add_argument("--val", type=int, default=400)
    p.add_argument("--test", type=int, default=600)
    p.add_argument("--test-seen-voice", type=int, default=400, help="test sentences in training voices (default: 400)")
    p.add_argument("--snr", default="5,20", metavar="LOW,HIGH", help="noise level range in dB (default: 5,20)")
    p.add_argument("--test-accents", default=None, metavar="A,B", help="held-out accents (default: en-029)")
    p.add_argument("--test-variants", default=None, metavar="V,W", help="held-out voice variants")
    p.add_argument("--random-accents", type=float, default=0.0, metavar="SHARE",
                   help="share of training and validation utterances read in a random accent: a training accent "
                        "with random phoneme substitutions (default: 0)")
    p.add_argument("--accent-rules", default=None, metavar="LOW,HIGH",
                   help="with --random-accents: phoneme substitutions per random accent (default: 6,12)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--workers", type=int, default=2, help="synthesis processes (default: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_speech)

    p = verbs.add_parser("lm-text", help="a dataset's training text, one sentence per line, for rnnkit train",
                         description="Write what a character language model for a recognition dataset may read: its "
                                     "training transcripts and, with --text, the sentences of that corpus which the "
                                     "dataset's text split puts in its training part (never a validation or test "
                                     "sentence), each once, shuffled. Train on it with rnnkit train --data FILE, then "
                                     "decode with rnnkit recognize eval RUN --beam 10 --lm LM_RUN.")
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR", help="built by rnnkit data handwriting|speech")
    p.add_argument("out", type=output_file(".txt"), metavar="FILE", help="the text file to write (a new one)")
    p.add_argument("--text", type=Path, default=None,
                   help="the corpus the dataset was built from, for more sentences (default: the transcripts only)")
    p.add_argument("--seed", type=seed, default=0, help="the order of the lines (default: 0)")
    p.set_defaults(func=cmd_lm_text)


def _text(args: argparse.Namespace) -> Path:
    text = args.text or Path(DEFAULT_TEXT)
    if not text.is_file():
        what = "is a directory" if text.is_dir() else "not found"
        raise ConfigError(f"{text} {what} — pass --text PATH, a UTF-8 file with one sentence per line")
    return text


def _summary(result: dict, out: Path) -> int:
    for split, s in result["splits"].items():
        info(f"{split}: {s['count']:,} lines")
    info(f"wrote {out}; train on it with: rnnkit recognize train --data {out}")
    print(json.dumps({"out": str(out), "splits": {k: v["count"] for k, v in result["splits"].items()}}))
    return 0


def cmd_handwriting(args: argparse.Namespace) -> int:
    from rnnkit.data.handwriting import HandwritingSpec, build_handwriting

    spec = HandwritingSpec(
        text=_text(args), train_lines=args.train_lines, val_lines=args.val_lines, test_lines=args.test_lines,
        test_seen=not args.no_test_seen, height=args.height, max_chars=args.max_chars, seed=args.seed,
        test_font=args.test_font, augment=args.augment, eval_augment=args.eval_augment,
        **({"font_dirs": [str(d) for d in args.font_dir]} if args.font_dir else {}),
    )
    if args.workers is not None and args.workers <= 0:
        raise ConfigError(f"--workers must be positive (got {args.workers}) — e.g. --workers 2")
    return _summary(build_handwriting(args.out, spec, progress=not args.quiet, workers=args.workers), args.out)


def _pair(text: str, flag: str, kind=float, example: str = "5,20") -> tuple:
    try:
        low, high = (kind(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not LOW,HIGH ({kind.__name__}s) — e.g. {flag} {example}") from None
    return low, high


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_speech(args: argparse.Namespace) -> int:
    from rnnkit.data.speech import SpeechSpec, build_speech

    extra = {name: _names(getattr(args, name)) for name in ("test_accents", "test_variants")
             if getattr(args, name) is not None}
    if args.accent_rules is not None:
        if not args.random_accents:
            raise ConfigError("--accent-rules shapes the random accents — give --random-accents SHARE too, e.g. 0.5")
        extra["accent_rules"] = _pair(args.accent_rules, "--accent-rules", int, "6,12")
    spec = SpeechSpec(text=_text(args), train=args.train, val=args.val, test=args.test,
                      test_seen_voice=args.test_seen_voice, snr_db=_pair(args.snr, "--snr"), seed=args.seed,
                      random_accents=args.random_accents, **extra)
    if args.workers <= 0:
        raise ConfigError(f"--workers must be positive (got {args.workers}) — e.g. --workers 2")
    return _summary(build_speech(args.out, spec, progress=not args.quiet, workers=args.workers), args.out)


def cmd_lm_text(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import atomic_write
    from rnnkit.data.recognition import lm_lines

    if args.out.exists():
        raise ConfigError(f"{args.out} exists — name a new file (or remove it first)")
    lines = lm_lines(args.dataset, _text(args) if args.text is not None else None, args.seed)
    atomic_write(args.out, "".join(f"{line}\n" for line in lines).encode("utf-8"))
    info(f"wrote {len(lines):,} lines to {args.out}; train a character model on it with: "
         f"rnnkit train --data {args.out} --out LM_RUN")
    print(json.dumps({"out": str(args.out), "lines": len(lines), "chars": sum(len(x) + 1 for x in lines)}))
    return 0

"""How far apart espeak-ng's English accents are, and how far a speech dataset's random accents move from their
base: the share of phonemes that differ (1 - matched / longer, difflib over ``espeak-ng -x --sep=_``) on 200
sentences of the training text.

    python benchmarks/accent_distance.py DATASET_DIR [--base en-gb-x-rp] [--accents 10]

DATASET_DIR is a speech dataset built with ``rnnkit data speech --random-accents SHARE``. Prints a table and writes
``benchmarks/results/accent_distance.json``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from common import save

from rnnkit.data import speech_accents
from rnnkit.data.speech import ESPEAK_ROOT, SPLITS, TEST_ACCENTS, TRAIN_ACCENTS, read_dataset, read_split


def phonemes(sentences: list[str], voice: str, path: Path | None = None) -> list[str]:
    out = speech_accents.transcription(voice, sentences, path)
    return [p for p in out.replace("\n", " ").replace(" ", "_").split("_") if p]


def distance(a: list[str], b: list[str]) -> float:
    matched = sum(m.size for m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks())
    return 1 - matched / max(len(a), len(b))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--base", default="en-gb-x-rp", help="the accent to measure from (default: en-gb-x-rp)")
    ap.add_argument("--accents", type=int, default=10, help="random accents of --base to measure (default: 10)")
    args = ap.parse_args()
    info = read_dataset(args.dataset)
    if "random_accents" not in info:
        fail(f"{args.dataset} has no random accents — build it with --random-accents 0.5")
    sentences = [label for _, label, _ in read_split(args.dataset, "train")][:200]
    base = phonemes(sentences, args.base)
    fixed = {a: distance(base, phonemes(sentences, a)) for a in TRAIN_ACCENTS + TEST_ACCENTS if a != args.base}
    names = [n for n in info["random_accents"] if n.split("~")[0] == args.base][:args.accents]
    if not names:
        fail(f"{args.dataset} has no random accents of {args.base} — pass --base with a training accent")
    random = {n: distance(base, phonemes(sentences, f"rand/{n}", args.dataset / ESPEAK_ROOT)) for n in names}
    for name, d in list(fixed.items()) + list(random.items()):
        print(f"{name:<22} {100 * d:5.1f}% of the phonemes of {args.base} differ")
    low, high, mean = min(random.values()), max(random.values()), sum(random.values()) / len(random)
    print(f"random accents: {100 * low:.1f}-{100 * high:.1f}%, mean {100 * mean:.1f}%")
    save("accent_distance", {"dataset": str(args.dataset), "base": args.base, "sentences": len(sentences),
                             "accent_rules": info["spec"].get("accent_rules"), "fixed": fixed, "random": random,
                             "splits": {s: info["splits"][s].get("random_accent_share") for s in SPLITS}})


if __name__ == "__main__":
    main()

"""``rnnkit generate train|sample|eval``: one-to-many — a sequence generated from one input (a label, an image, a
key), with a ``ConditionalGenerator``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit import __version__
from rnnkit.cli.common import add_load_args, add_run_args, budget, info, new_run_dir, resumed_config, start_run, stopped
from rnnkit.cliargs import DEFAULT_EPOCHS, EPOCHS_WITHOUT_BUDGET, Parser, add_dataclass_args, given, output_file, seed
from rnnkit.errors import ConfigError

KIND = "conditional_generator"
DATA_FLAGS = ("data", "test_fraction", "val_fraction", "split_seed", "limit")
MAX_LENGTH = {"text": 40, "digits": 12, "music": 400}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from rnnkit.models.conditional import ConditionalGeneratorConfig
    from rnnkit.train.batches import BatchTrainConfig

    group = sub.add_parser("generate", help="one-to-many: generate a sequence from a label, an image or a key",
                           description="Train, sample and evaluate a conditional generator: names by language, "
                                       "captions of digit images, Bach chorale melodies by mode.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("train", help="train a conditional generator",
                         description="Train on a folder of <label>.txt files (or a text<TAB>label file: the label "
                                     "conditions the characters), 'digits' (scikit-learn's 8x8 images -> their "
                                     "English word) or 'bach-chorales' (music21's chorales: mode -> melody).")
    p.add_argument("--data", metavar="PATH|digits|bach-chorales", help="the (condition, sequence) pairs")
    p.add_argument("--test-fraction", type=float,
                   help="held out of every label for the figures (default: 0.1; 0.2 is the digits convention)")
    p.add_argument("--val-fraction", type=float, help="of the rest, held out to pick the best checkpoint (0.1)")
    p.add_argument("--split-seed", type=seed, help="seed of the splits (default: 0)")
    p.add_argument("--limit", type=int, metavar="N", help="bach-chorales: the first N chorales only (a quick try)")
    add_run_args(p, "generate-")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, ConditionalGeneratorConfig, "model"),
                   train_flags=add_dataclass_args(p, BatchTrainConfig, "training",
                                                         {"epochs": EPOCHS_WITHOUT_BUDGET}))

    p = verbs.add_parser("sample", help="generate sequences for a condition")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--label", help="the condition of a labelled run (e.g. Italian, minor); default: no label")
    p.add_argument("--image", type=int, metavar="N", help="digits: caption image N of scikit-learn's digits")
    p.add_argument("--prompt", default="",
                   help="the start of every sample: characters, or space-separated tokens for music")
    p.add_argument("--opening", metavar="CHORALE",
                   help="music: start from the opening bar of this held-out chorale ('test' for the first one; "
                        "a name the error lists)")
    p.add_argument("--num-samples", type=int, help="samples to draw (default: 5); with --beam K, the best N of the K "
                                                    "beams (default: all K)")
    p.add_argument("--max-length", type=int, help="new tokens at most (default: 40 text, 12 digits, 400 music)")
    p.add_argument("--temperature", type=float, help="0 = greedy; higher = more varied (default: 0.8)")
    p.add_argument("--top-k", type=int, help="sample only from the K most likely tokens")
    p.add_argument("--top-p", type=float, help="sample only from the smallest set with probability >= P")
    p.add_argument("--beam", type=int, metavar="K", help="beam search: the K most likely sequences instead "
                                                        "(no sampling: not with --temperature, --top-k, --top-p)")
    p.add_argument("--alpha", type=float, default=0.0, help="beam length penalty ((5+len)/6)^alpha (default: 0)")
    p.add_argument("--seed", type=seed, help="random seed, for reproducible samples")
    p.add_argument("--midi", type=output_file(".mid", ".midi"),
                   metavar="FILE", help="music: write the first sample as MIDI")
    p.add_argument("--musicxml", type=output_file(".musicxml", ".xml", ".mxl"),
                   metavar="FILE", help="music: write the first sample as MusicXML")
    p.add_argument("--piano-roll", type=output_file(".png"),
                   metavar="FILE", help="music: draw the first sample as a PNG")
    p.add_argument("--json", action="store_true", help="one JSON object per sample")
    add_load_args(p)
    p.set_defaults(func=cmd_sample)

    p = verbs.add_parser("eval", help="held-out figures against classical peers (n-gram models, an SVM)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="digits: beam size scored beside greedy (5)")
    p.add_argument("--captions-png", type=output_file(".png"), metavar="FILE",
                   help="digits: where to draw held-out images with their captions (default: RUN_DIR/captions.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import FORMAT_VERSION, build_model
    from rnnkit.data.conditional import GenerationSpec, SequenceVocab, load_generation
    from rnnkit.models.conditional import ConditionalGeneratorConfig, build_generator
    from rnnkit.train.batches import BatchTrainConfig, ConditionedTrainer

    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.resume:
        run_dir, config = resumed_config(args, KIND, DATA_FLAGS, model_flags)
        spec = GenerationSpec(**config["data"]["spec"])
        data = load_generation(spec, SequenceVocab.from_dict(config["vocab"]), config["classes"], verify=True)
        train_config = BatchTrainConfig.resumed(config["train"], train_flags)
        model = build_model(config)
    else:
        if not args.data:
            raise ConfigError("no data given — pass --data PATH (a folder of <label>.txt files), digits or "
                              "bach-chorales")
        run_dir = new_run_dir(args, "generate")
        options = {f: getattr(args, f) for f in DATA_FLAGS[1:] if getattr(args, f) is not None}
        spec = GenerationSpec(args.data, **options)
        train_config = BatchTrainConfig(**train_flags)
        if not (train_config.epochs or train_config.max_steps or train_config.minutes):
            train_config.epochs = DEFAULT_EPOCHS
        data = load_generation(spec)
        torch.manual_seed(train_config.seed)
        sizes = ({"num_classes": len(data.classes)} if data.classes else
                 {"condition_size": data.condition_size, "image_shape": data.image_shape})
        model = build_generator(ConditionalGeneratorConfig(vocab_size=len(data.vocab), **sizes, **model_flags))
        if data.scaling is not None:
            model.set_scaling(*data.scaling)
        config = {
            "format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
            "model": model.config.to_dict(), "classes": data.classes, "vocab": data.vocab.to_dict(),
            "data": {"spec": vars(spec), "kind": spec.kind, "description": data.description},
        }
    trainer = ConditionedTrainer(model, data.train, data.val, train_config, run_dir, show_progress=not args.quiet)
    start_run(trainer, config, run_dir, bool(args.resume))

    m = model.config
    members = f"{m.members} x " if m.members > 1 else ""
    info(f"data: {data.description}; {len(data.train):,} train / {len(data.val):,} validation / "
         f"{len(data.test):,} held-out sequences")
    info(f"model: {members}{m.cell.upper()} {m.num_layers}x{m.hidden_size}, condition {m.condition} "
         f"({'labels' if m.num_classes else m.encoder + ' encoder'}), {model.num_parameters():,} parameters; "
         f"budget {budget(train_config)}, batch {train_config.batch_size}; run dir {run_dir}")
    summary = trainer.fit()
    if stopped(summary, "rnnkit generate train", run_dir):
        return 130
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s; validation loss "
         f"{summary['val_loss']:.4f} nats/token (best {trainer.best_key[0]:.4f}); "
         f"score it with: rnnkit generate eval {run_dir}")
    return 0


# -- shared --------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace, splits: bool = False):
    from rnnkit.checkpoint import load_weights, weights_read
    from rnnkit.data.conditional import GenerationSpec, SequenceVocab, load_generation
    from rnnkit.train import resolve_device

    model, config = load_weights(args.run_dir, args.weights, resolve_device(args.device), kind=KIND)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    vocab = SequenceVocab.from_dict(config["vocab"])
    data = None
    if splits:
        data = load_generation(GenerationSpec(**config["data"]["spec"]), vocab, config["classes"], verify=True)
    return model, vocab, config, data


# -- sample --------------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from rnnkit import one_to_many
    from rnnkit.generate import check_sampling

    kind = _kind_of(args)
    max_length = args.max_length if args.max_length is not None else MAX_LENGTH[kind]
    sampling = [f for f in ("temperature", "top_k", "top_p") if getattr(args, f) is not None]
    if args.beam is not None and sampling:
        flag = "--" + sampling[0].replace("_", "-")
        raise ConfigError(f"{flag} shapes sampling, and --beam searches instead of sampling — drop one of them")
    args.temperature = 0.8 if args.temperature is None else args.temperature
    if args.beam is not None and args.beam < 1:
        raise ConfigError(f"--beam must be >= 1 (got {args.beam}) — e.g. --beam 5")
    if args.beam is not None and args.num_samples is not None and args.num_samples > args.beam:
        raise ConfigError(f"--num-samples {args.num_samples} asks for more sequences than --beam {args.beam} keeps — "
                          f"pass --beam {args.num_samples} or more")
    if args.num_samples is None:
        args.num_samples = args.beam or 5
    check_sampling(args.temperature, args.top_k, args.top_p, max_length, args.num_samples)
    music_out = [a for a in (args.midi, args.musicxml, args.piano_roll) if a is not None]
    if music_out and kind != "music":
        raise ConfigError("--midi, --musicxml and --piano-roll write melodies — they need a run trained on "
                          "bach-chorales")
    if args.opening is not None and kind != "music":
        raise ConfigError("--opening starts from a chorale's first bar — it needs a run trained on bach-chorales")
    model, vocab, config, data = _load(args, splits=kind == "music" and args.opening is not None)
    mode = args.label
    if kind == "music" and args.opening is not None:
        opening = _opening(data, args.opening)
        mode = mode or opening.mode  # the chorale's own mode, unless --label says otherwise
        args.label = mode
    condition, prompt = _condition(args, kind, config)
    if kind == "music" and args.opening is not None:
        prompt = opening.tokens[:opening.opening] + prompt
    if args.beam:
        found = one_to_many.beam(model, vocab, condition, prompt, args.beam, max_length, args.alpha)
        outputs = [(tokens, score) for tokens, score in found[:args.num_samples]]
    else:
        outputs = [(tokens, None) for tokens in one_to_many.sample(
            model, vocab, condition, prompt, args.num_samples, max_length, args.temperature, args.top_k, args.top_p,
            args.seed)]
    sep = " " if kind == "music" else ""
    for tokens, score in outputs:
        text = sep.join(tokens)
        if args.json:
            print(json.dumps({"sample": text, "tokens": len(tokens), "score": score}, ensure_ascii=False))
        else:
            print(text if score is None else f"{text}\t{score:.3f}")
    if music_out:
        start = f", after the opening bar of {opening.name}" if args.opening is not None else ""
        _write_music(args, outputs[0][0], mode or "major", f"generated melody ({mode or 'major'}{start})")
    return 0


def _kind_of(args: argparse.Namespace) -> str:
    from rnnkit.checkpoint import read_config

    return read_config(args.run_dir, kind=KIND)["data"]["kind"]


def _condition(args: argparse.Namespace, kind: str, config: dict):
    """The condition and the prompt tokens the flags ask for."""
    import numpy as np

    prompt = args.prompt.split() if kind == "music" else list(args.prompt)
    if kind == "digits":
        if args.label is not None or args.image is None:
            raise ConfigError("this run captions images — pass --image N (0..1796, an index into scikit-learn's "
                              "digits)")
        from sklearn.datasets import load_digits

        images = load_digits().data.astype(np.float32)
        if not 0 <= args.image < len(images):
            raise ConfigError(f"--image must be in 0..{len(images) - 1} (got {args.image}) — pick an index into "
                              "scikit-learn's digits")
        return images[args.image], prompt
    if args.image is not None:
        raise ConfigError("--image is for runs trained on digits — this run takes --label")
    if args.label is None:
        if config["model"]["condition"] != "none" and config["model"]["condition_dropout"] == 0:
            raise ConfigError(f"this run needs a label — pass --label (one of {', '.join(config['classes'])})")
        return None, prompt
    if args.label not in config["classes"]:
        raise ConfigError(f"unknown label {args.label!r} — use one of {', '.join(config['classes'])}")
    return config["classes"].index(args.label), prompt


def _opening(data, name: str):
    melodies = data.extra["test_melodies"]
    if name == "test":
        m = melodies[0]
    else:
        m = next((m for m in melodies if m.name == name), None)
        if m is None:
            raise ConfigError(f"no held-out chorale named {name!r} — use 'test' or one of "
                              f"{', '.join(x.name for x in melodies[:5])}, ...")
    info(f"opening bar of {m.name} ({m.mode}): {' '.join(m.tokens[:m.opening])}")
    return m


def _write_music(args: argparse.Namespace, tokens: list[str], mode: str, title: str) -> None:
    from rnnkit.data.music import write_melody
    from rnnkit.plots import plot_piano_roll

    if args.midi or args.musicxml:
        write_melody(tokens, mode, args.midi, args.musicxml, title=title)
        info(f"wrote {', '.join(str(p) for p in (args.midi, args.musicxml) if p)}")
    if args.piano_roll:
        plot_piano_roll(tokens, args.piano_roll, title=title)
        info(f"wrote {args.piano_roll}")


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit import one_to_many

    if args.beam < 1:
        raise ConfigError(f"--beam must be >= 1 (got {args.beam}) — e.g. --beam 5")
    model, _, config, data = _load(args, splits=True)
    png = args.captions_png or args.run_dir / "captions.png"
    result = {"data": config["data"]["kind"], **one_to_many.evaluate(model, data, args.beam, png),
              "weights": args.weights}
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key != "errors":
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    for e in result.get("errors", [])[:10]:
        print(f"  {e['image']}: {e['truth']!r} captioned {e['greedy']!r}")
    return 0

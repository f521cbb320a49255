"""``rnnkit tag train|eval|predict``: many-to-many, same length — a tag for every token (CoNLL files) or character
(word segmentation, truecasing of plain text)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnkit import __version__
from rnnkit.cli.common import (
    add_load_args,
    add_predictions_arg,
    add_run_args,
    budget,
    fit_and_report,
    info,
    new_run_dir,
    resumed_config,
    start_run,
    stdin_lines,
    write_jsonl,
)
from rnnkit.cliargs import DEFAULT_EPOCHS, EPOCHS_WITHOUT_BUDGET, Parser, add_dataclass_args, given, seed
from rnnkit.errors import ConfigError

KIND = "tagger"
DATA_FLAGS = ("data", "task", "token_column", "tag_column", "max_sentences", "min_count", "test_fraction",
              "val_fraction", "split_seed")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from rnnkit.data.tagging import TASKS
    from rnnkit.models.tagger import SequenceTaggerConfig
    from rnnkit.train.batches import BatchTrainConfig

    group = sub.add_parser("tag", help="many-to-many: a tag for every token or character (CoNLL files, word "
                                       "segmentation, truecasing)",
                           description="Train, evaluate and apply a recurrent sequence tagger.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("train", help="train a tagger",
                         description="Train a tagger on a CoNLL-style file (token<TAB>tag lines, a blank line between "
                                     "sentences) or, with --task spaces|case, on plain text, one sentence a line "
                                     "(the first tab-separated field): word segmentation restores the spaces of "
                                     "text written without them, truecasing the capitals of lower-cased text.")
    p.add_argument("--data", metavar="PATH", help="a CoNLL file, or a text file for --task spaces|case")
    # data flags default to None so that a resume can tell they were given (the data of a run cannot change)
    p.add_argument("--task", choices=TASKS, help="conll: the file's own tags; spaces: word segmentation; case: "
                                                 "truecasing (default: conll)")
    p.add_argument("--token-column", type=int, help="conll: the token's column, from 1 (default: 1)")
    p.add_argument("--tag-column", type=int, help="conll: the tag's column, from 1; 0 is the last (default: 0)")
    p.add_argument("--max-sentences", type=int, help="use this many distinct sentences at most (default: 0, all)")
    p.add_argument("--min-count", type=int, help="conll: rarer words become <unk> (default: 1)")
    p.add_argument("--test-fraction", type=float, help="sentences held out for testing (default: 0.1)")
    p.add_argument("--val-fraction", type=float, help="of the rest, held out to pick the best checkpoint (default: "
                                                      "0.1; 0: keep the final weights)")
    p.add_argument("--split-seed", type=seed, help="seed of the split (default: 0)")
    add_run_args(p, "tag-")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, SequenceTaggerConfig, "model"),
                   train_flags=add_dataclass_args(p, BatchTrainConfig, "training",
                                                  {"epochs": EPOCHS_WITHOUT_BUDGET}))

    p = verbs.add_parser("eval", help="test accuracy and F1 against the most-frequent-tag and maximum-entropy "
                                      "baselines")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    add_predictions_arg(p, "each test sentence's tokens, true tags and predicted tags")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("predict", help="tag texts (arguments or stdin lines)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("inputs", nargs="*", metavar="TEXT", help="texts to tag (default: one per stdin line)")
    p.add_argument("--json", action="store_true", help="one JSON object per input: tokens, tags and the output")
    add_load_args(p)
    p.set_defaults(func=cmd_predict, extra_positionals="inputs")


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import FORMAT_VERSION, build_model
    from rnnkit.data.labeled import TokenVocab
    from rnnkit.data.tagging import TaggingSpec, load_tagging
    from rnnkit.models.tagger import SequenceTagger, SequenceTaggerConfig
    from rnnkit.train.batches import BatchTrainConfig, TaggingTrainer

    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.resume:
        run_dir, config = resumed_config(args, KIND, DATA_FLAGS, model_flags)
        spec = TaggingSpec(**config["data"]["spec"])
        data = load_tagging(spec, TokenVocab.from_dict(config["vocab"]), config["tags"], verify=True)
        train_config = BatchTrainConfig.resumed(config["train"], train_flags)
        model = build_model(config)
    else:
        run_dir = new_run_dir(args, "tag")
        options = {f: getattr(args, f) for f in DATA_FLAGS[1:] if getattr(args, f) is not None}
        spec = TaggingSpec(args.data or "", **options)
        train_config = BatchTrainConfig(**train_flags)
        if not (train_config.epochs or train_config.max_steps or train_config.minutes):
            train_config.epochs = DEFAULT_EPOCHS
        data = load_tagging(spec)
        torch.manual_seed(train_config.seed)
        model = SequenceTagger(SequenceTaggerConfig(vocab_size=len(data.vocab), num_tags=len(data.tags),
                                                    **model_flags))
        config = {
            "format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
            "model": model.config.to_dict(), "tags": data.tags, "vocab": data.vocab.to_dict(),
            "data": {"spec": vars(spec), "description": data.description},
        }
    trainer = TaggingTrainer(model, data.train, data.val if len(data.val) else None, train_config, run_dir,
                             show_progress=not args.quiet)
    start_run(trainer, config, run_dir, bool(args.resume))

    info(f"data: {data.description}; {len(data.train):,} train / {len(data.val):,} validation / "
         f"{len(data.test):,} test sentences")
    m = model.config
    info(f"model: {'bi' if m.bidirectional else ''}{m.cell.upper()} {m.num_layers}x{m.hidden_size}, "
         f"{model.num_parameters():,} parameters; budget "
         f"{budget(train_config)}, batch {train_config.batch_size}; run dir {run_dir}")
    return fit_and_report(trainer, "tag", run_dir)


def _load(args: argparse.Namespace):
    from rnnkit.checkpoint import load_weights, weights_read
    from rnnkit.data.labeled import TokenVocab
    from rnnkit.train import resolve_device

    model, config = load_weights(args.run_dir, args.weights, resolve_device(args.device), kind=KIND)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    return model, TokenVocab.from_dict(config["vocab"]), config


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import check_writable
    from rnnkit.data.tagging import TaggingSpec, load_tagging
    from rnnkit.tagging import evaluate, predict_tags

    model, vocab, config = _load(args)
    if args.predictions:
        check_writable(args.predictions)  # before the scoring, which takes a while with the baselines
    data = load_tagging(TaggingSpec(**config["data"]["spec"]), vocab, config["tags"], verify=True)
    device = next(model.parameters()).device
    pred = predict_tags(model, data.test, device)
    result = {**evaluate(model, data, device, not args.no_baselines, pred), "task": data_task(config),
              "weights": args.weights}
    if args.predictions:
        write_jsonl(args.predictions, ({"tokens": tokens, "truth": [data.tags[t] for t in truth],
                                        "prediction": [data.tags[t] for t in guess]}
                                       for tokens, truth, guess in zip(data.test_tokens, data.test.targets, pred,
                                                                       strict=True)))
        result["predictions"] = str(args.predictions)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['test_sentences']:,} test sentences, {result['test_steps']:,} steps ({args.weights} weights)")
    print(f"{'':<24} {'accuracy':>9} {'macro F1':>9} {'sentences':>10}")
    rows = [("RNN tagger", result)] + [(name.replace("_", " "), b) for name, b in result.get("baselines", {}).items()]
    for name, r in rows:
        print(f"{name:<24} {r['accuracy']:9.4f} {r['macro_f1']:9.4f} {r['sentence_accuracy']:10.4f}")
    worst = sorted(result["per_tag"].items(), key=lambda kv: kv[1]["f1"])[:5]
    print("lowest F1: " + ", ".join(f"{tag} {r['f1']:.3f} ({r['support']})" for tag, r in worst))
    if args.predictions:
        print(f"predictions: {args.predictions}")
    return 0


def data_task(config: dict) -> str:
    return config["data"]["spec"].get("task", "conll")


# -- predict -------------------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.data.tagging import input_tokens, render
    from rnnkit.tagging import tag_tokens

    model, vocab, config = _load(args)
    texts = args.inputs or stdin_lines()
    if not texts:
        raise ConfigError("no text to tag — pass it as arguments or one per line on stdin")
    task = data_task(config)
    sentences = [input_tokens(t, task) for t in texts]
    empty = [t for t, s in zip(texts, sentences, strict=True) if not s]
    if empty:
        raise ConfigError(f"{empty[0]!r} has nothing to tag — pass text with at least one "
                          f"{'word' if task == 'conll' else 'character'}")
    for tokens, tags in zip(sentences, tag_tokens(model, vocab, config["tags"], sentences,
                                                  next(model.parameters()).device), strict=True):
        output = render(tokens, tags, task)
        if args.json:
            print(json.dumps({"tokens": tokens, "tags": tags, "output": output}, ensure_ascii=False))
        else:
            print(output)
    return 0

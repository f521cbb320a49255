"""``rnnkit classify train|predict|eval``: many-to-one sequence classification (text or numeric series)."""

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
    start_run,
    stdin_lines,
    write_jsonl,
)
from rnnkit.cliargs import DEFAULT_EPOCHS, EPOCHS_WITHOUT_BUDGET, Parser, add_dataclass_args, given, output_file, seed
from rnnkit.errors import ConfigError, CorpusError

KIND = "classifier"
DATA_FLAGS = ("data", "test_data", "tokens", "min_count", "test_fraction", "val_fraction", "split_seed")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from rnnkit.models.classifier import SequenceClassifierConfig
    from rnnkit.train.batches import BatchTrainConfig

    group = sub.add_parser("classify", help="many-to-one: classify sequences (text, names, numeric series)",
                           description="Train, evaluate and apply a recurrent sequence classifier.")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

    p = verbs.add_parser("train", help="train a classifier",
                         description="Train a classifier on text<TAB>label files, folders of <label>.txt files "
                                     "(one example per line), UEA/UCR .ts files, or a UEA dataset shipped with aeon "
                                     "(e.g. japanese_vowels).")
    p.add_argument("--data", action="append", metavar="PATH|NAME",
                   help="training data; repeat to join several text files (e.g. the three sentiment files)")
    p.add_argument("--test-data", metavar="PATH", help="a separate test file (default: a stratified split)")
    # data flags default to None so that a resume can tell they were given (the data of a run cannot change)
    p.add_argument("--tokens", choices=("char", "word", "subword"),
                   help="text tokens: char, word, or subword (words plus hashed character 3-5-grams; default: char)")
    p.add_argument("--min-count", type=int, help="rarer tokens become <unk> (default: 1)")
    p.add_argument("--test-fraction", type=float, help="held out for testing (default: 0.1)")
    p.add_argument("--val-fraction", type=float,
                   help="of the training part, held out to pick the best checkpoint (default: 0.1; 0: train on all of "
                        "it for the budget given and keep the final weights)")
    p.add_argument("--split-seed", type=seed, help="seed of the stratified splits (default: 0)")
    p.add_argument("--init-from", type=Path, metavar="LM_RUN_DIR",
                   help="start the encoder from a character language model trained by `rnnkit train` (needs "
                        "--tokens char, the same cell, hidden size and embedding size, and at least its layers)")
    add_run_args(p, "classify-")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, SequenceClassifierConfig, "model"),
                   train_flags=add_dataclass_args(p, BatchTrainConfig, "training",
                                                         {"epochs": EPOCHS_WITHOUT_BUDGET}))

    p = verbs.add_parser("eval", help="test accuracy against classical baselines: the majority class, and TF-IDF + "
                                      "logistic regression (text) or MiniRocket + ridge (series)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--confusion-png", type=output_file(".png"), metavar="FILE",
                   help="where to draw the confusion matrix (default: RUN_DIR/confusion.png)")
    p.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    add_predictions_arg(p, "each test example (its text, or its index for series), true class and predicted class")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)

    p = verbs.add_parser("predict", help="classify texts (arguments or stdin lines) or series (.ts file)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("inputs", nargs="*", metavar="TEXT", help="texts to classify (default: one per stdin line)")
    p.add_argument("--file", type=Path, help="a .ts file of series, for series models")
    p.add_argument("--top", type=int, default=1, help="the K most likely classes per input (default: 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    add_load_args(p)
    p.set_defaults(func=cmd_predict, extra_positionals="inputs")


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import FORMAT_VERSION, build_model, read_config
    from rnnkit.data.classification import ClassificationSpec, load_classification
    from rnnkit.data.labeled import TokenVocab
    from rnnkit.models.classifier import SequenceClassifier, SequenceClassifierConfig
    from rnnkit.train.batches import BatchTrainConfig, BatchTrainer

    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.resume:
        run_dir = args.resume
        config = read_config(run_dir, kind=KIND)
        refused = [f"--{f.replace('_', '-')}" for f in (*DATA_FLAGS, "init_from") if getattr(args, f) is not None]
        refused += ["--out"] if args.out not in (None, run_dir) else []
        if refused:
            raise ConfigError(f"{refused[0]} cannot be given when resuming: the run keeps its own data and "
                              f"splits — drop {refused[0]}, or start a new --out")
        changed = [k for k, v in model_flags.items() if config["model"].get(k) != v]
        if changed:
            raise ConfigError(f"--{changed[0].replace('_', '-')} cannot change when resuming — resume without it, "
                              "or start a new --out")
        spec = ClassificationSpec(**config["data"]["spec"])
        vocab = TokenVocab.from_dict(config["vocab"]) if config.get("vocab") else None
        data = load_classification(spec, vocab, config["classes"], verify=True)
        train_config = BatchTrainConfig.resumed(config["train"], train_flags)
        model = build_model(config)
    else:
        run_dir = new_run_dir(args, "classify")
        options = {f: getattr(args, f) for f in DATA_FLAGS[2:] if getattr(args, f) is not None}
        spec = ClassificationSpec(args.data or [], args.test_data, **options)
        train_config = BatchTrainConfig(**train_flags)
        if not (train_config.epochs or train_config.max_steps or train_config.minutes):
            train_config.epochs = DEFAULT_EPOCHS
        data = load_classification(spec)
        torch.manual_seed(train_config.seed)
        sizes = {"vocab_size": len(data.vocab)} if data.vocab else {"input_size": data.input_size}
        model = SequenceClassifier(SequenceClassifierConfig(**sizes, num_classes=len(data.classes), **model_flags))
        if data.scaling is not None:
            model.set_scaling(*data.scaling)
        if args.init_from:
            _init_from(model, data.vocab, args.init_from)
        config = {
            "format_version": FORMAT_VERSION, "kind": KIND, "rnnkit_version": __version__,
            "model": model.config.to_dict(), "classes": data.classes,
            "vocab": data.vocab.to_dict() if data.vocab else None,
            "data": {"spec": vars(spec), "description": data.description},
            "init_from": str(args.init_from) if args.init_from else None,
        }
    trainer = BatchTrainer(model, data.train, data.val if len(data.val) else None, train_config, run_dir,
                           classes=True, show_progress=not args.quiet)
    start_run(trainer, config, run_dir, bool(args.resume))

    info(f"data: {data.description}; {len(data.train):,} train / {len(data.val):,} validation / "
         f"{len(data.test):,} test")
    m = model.config
    members = f"{m.members} x " if m.members > 1 else ""
    info(f"model: {members}{'bi' if m.bidirectional else ''}{m.cell.upper()} {m.num_layers}x{m.hidden_size}, "
         f"{m.pooling} pooling, {model.num_parameters():,} parameters; budget "
         f"{budget(train_config)}, batch {train_config.batch_size}; run dir {run_dir}")
    return fit_and_report(trainer, "classify", run_dir)


def _init_from(model, vocab, lm_run_dir: Path) -> None:
    from rnnkit.checkpoint import load_run
    from rnnkit.models.transfer import check_transfer, init_from_language_model

    lm, lm_vocab, _ = load_run(lm_run_dir, "best", "cpu")
    check_transfer(model.config, lm.config, vocab)
    matched, layers = init_from_language_model(model, vocab, lm, lm_vocab)
    info(f"encoder initialised from {lm_run_dir}: {matched} of {len(vocab) - 2} characters and "
         f"{layers} recurrent layer(s)")


# -- eval ----------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace):
    from rnnkit.checkpoint import load_weights, weights_read
    from rnnkit.data.labeled import TokenVocab
    from rnnkit.train import resolve_device

    model, config = load_weights(args.run_dir, args.weights, resolve_device(args.device), kind=KIND)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    vocab = TokenVocab.from_dict(config["vocab"]) if config.get("vocab") else None
    return model, vocab, config


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from rnnkit.baselines.classify import majority_accuracy, minirocket_accuracy, tfidf_accuracy
    from rnnkit.checkpoint import check_writable
    from rnnkit.data.classification import ClassificationSpec, load_classification
    from rnnkit.plots import plot_confusion
    from rnnkit.scores import class_scores
    from rnnkit.train.batches import predict

    model, vocab, config = _load(args)
    png = args.confusion_png or args.run_dir / "confusion.png"
    for path in (png, args.predictions):  # before the scoring: a read-only run directory fails now, not after it
        if path is not None:
            check_writable(path)
    spec = ClassificationSpec(**config["data"]["spec"])
    data = load_classification(spec, vocab, config["classes"], verify=True)
    device = next(model.parameters()).device
    pred = predict(model, data.test, device).argmax(-1).numpy()
    truth = data.test.targets
    scores = class_scores(truth, pred, data.classes)
    accuracy = scores["accuracy"]
    train_y = np.concatenate([data.train.targets, data.val.targets])
    baselines = {}
    if not args.no_baselines:
        baselines["majority"] = majority_accuracy(train_y, truth)
        if data.test_texts is not None:
            baselines["tfidf_logreg"] = tfidf_accuracy(data.train_texts, train_y, data.test_texts, truth, spec.tokens)
        else:
            train_x = [*data.train.inputs, *data.val.inputs]
            baselines["minirocket"] = minirocket_accuracy(train_x, train_y, data.test.inputs, truth)
    plot_confusion(np.array(scores["confusion"]), data.classes, png,
                   title=f"test accuracy {accuracy:.4f} ({len(truth):,} examples)")
    # per_class_recall: None for a class with no test examples (a --test-data file without it), not a miss
    result = {"accuracy": accuracy, "baseline_accuracy": max(baselines.values()) if baselines else None,
              "baselines": baselines, "test_examples": int(len(truth)), "macro_f1": scores["macro_f1"],
              "per_class_recall": {c: r["recall"] for c, r in scores["per_class"].items()},
              "per_class": scores["per_class"], "confusion": scores["confusion"],
              "confusion_png": str(png), "weights": args.weights}
    if args.predictions:
        inputs = data.test_texts if data.test_texts is not None else range(len(truth))
        write_jsonl(args.predictions, ({"input": x, "truth": data.classes[t], "prediction": data.classes[p]}
                                       for x, t, p in zip(inputs, truth.tolist(), pred.tolist(), strict=True)))
        result["predictions"] = str(args.predictions)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"test accuracy {accuracy:.4f}, macro F1 {scores['macro_f1']:.4f}, on {len(truth):,} examples "
          f"({args.weights} weights)")
    for name, acc in baselines.items():
        print(f"  baseline {name}: {acc:.4f} ({'beaten' if accuracy > acc else 'NOT beaten'})")
    print(f"confusion matrix: {png}")
    if args.predictions:
        print(f"predictions: {args.predictions}")
    return 0


# -- predict -------------------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from rnnkit.data.labeled import Examples
    from rnnkit.data.series import load_ts_file
    from rnnkit.train.batches import predict

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1 (got {args.top})")
    model, vocab, config = _load(args)
    classes = config["classes"]
    if vocab is None:
        if args.file is None or args.inputs:
            raise ConfigError("this run classifies numeric series — pass --file SERIES.ts")
        series, _ = load_ts_file(args.file, labels=False)
        names = [f"{args.file}#{i}" for i in range(len(series))]
        if not names:
            raise CorpusError(f"{args.file} holds no series — pass a UEA/UCR .ts file with at least one")
    else:
        if args.file is not None:
            raise ConfigError("this run classifies text — pass texts as arguments or on stdin, not --file")
        names = args.inputs or stdin_lines()
        series = [vocab.encode(t) for t in names]
        empty = [t for t, s in zip(names, series, strict=True) if len(s) == 0]
        if empty:
            raise CorpusError(f"{empty[0]!r} has no {vocab.kind} tokens — give non-empty text")
    if not names:
        raise ConfigError("nothing to classify — pass texts as arguments or lines on stdin")
    probs = predict(model, Examples(series, np.zeros(len(series), dtype=np.int64)),
                    next(model.parameters()).device).softmax(-1)
    top = probs.topk(min(args.top, len(classes)), dim=-1)
    for name, p, idx in zip(names, top.values.tolist(), top.indices.tolist(), strict=True):
        ranked = [(classes[i], round(q, 4)) for i, q in zip(idx, p, strict=True)]
        if args.json:
            print(json.dumps({"input": name, "predictions": [{"label": c, "probability": q} for c, q in ranked]}))
        else:
            print("\t".join([*(f"{c} {q:.3f}" for c, q in ranked), name]))
    return 0

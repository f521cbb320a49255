"""``rnnkit train|sample|eval``: the character-level language model."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from rnnkit import __version__
from rnnkit.cli.common import add_load_args, add_run_args, budget, info, new_run_dir, stopped
from rnnkit.cliargs import add_dataclass_args, given, seed
from rnnkit.errors import ConfigError, RnnkitError

MAIN_JOB_SAMPLE = 300


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The language-model verbs: train, sample, eval."""
    from rnnkit.models.language_model import LanguageModelConfig
    from rnnkit.train import TrainConfig

    p = sub.add_parser("train", help="train a character-level language model",
                       description="Train a character-level language model by stateful truncated BPTT.")
    p.add_argument("--data", help="a UTF-8 text file, 'shakespeare', or 'builtin' (default: the built-in corpus)")
    add_run_args(p)
    p.add_argument("--sample-length", type=int, default=MAIN_JOB_SAMPLE,
                   help=f"characters to sample when training ends, 0 for none (default: {MAIN_JOB_SAMPLE})")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel in N processes on this machine, as torchrun --nproc_per_node N does "
                        "(DDP; gloo on CPU, NCCL on GPU); the global --batch-size is split between them")
    p.set_defaults(func=cmd_train, model_flags=add_dataclass_args(p, LanguageModelConfig, "model",
                                                                  {"cell": "lnlstm on the CPU, lstm on CUDA"}),
                   train_flags=add_dataclass_args(p, TrainConfig, "training"))

    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompt", default="", help="text that primes the state; it is printed first")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more varied (default: 0.8)")
    p.add_argument("--top-k", type=int, help="sample only from the K most likely characters")
    p.add_argument("--top-p", type=float, help="sample only from the smallest set with probability >= P")
    p.add_argument("--seed", type=seed, help="random seed, for reproducible samples")
    p.add_argument("--num-samples", type=int, default=1, help="samples generated together (default: 1)")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights (CPU): several times faster at small batch, ~lossless (see BENCHMARKS.md)")
    add_load_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="validation loss of a trained model in nats/char and bits/char")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--data", help="corpus to evaluate on (default: the one the run trained on)")
    p.add_argument("--split", choices=("val", "all"), default="val",
                   help="val: the last 10%% of the corpus (default); all: the whole file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--dynamic", action="store_true",
                   help="also score by dynamic evaluation: the model keeps learning from the text as it reads it "
                        "(Krause et al. 2018), a different measure reported beside the static loss")
    p.add_argument("--dynamic-lr", type=float, help="its step size (default: 3e-4)")
    p.add_argument("--dynamic-decay", type=float, help="its pull back toward the trained weights (default: 3e-3)")
    p.add_argument("--dynamic-window", type=int, help="characters read between updates (default: 50)")
    add_load_args(p)
    p.set_defaults(func=cmd_eval)


# -- train ---------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnkit.checkpoint import CONFIG, FORMAT_VERSION, build_model, read_config, write_json
    from rnnkit.data import CharVocab, build_vocab, encode_file, resolve_corpus, split_tokens
    from rnnkit.data.datasets import sha256_file
    from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
    from rnnkit.train import TrainConfig, Trainer, distributed, resolve_device

    if args.sample_length < 0:
        raise ConfigError(f"--sample-length must be >= 0 (got {args.sample_length})")
    model_flags, train_flags = given(args, args.model_flags), given(args, args.train_flags)
    if args.nproc is not None and args.nproc != 1:
        return _launch(args, train_flags)
    if args.resume:
        run_dir = args.resume
        if args.out is not None and args.out.resolve() != run_dir.resolve():
            raise ConfigError("--resume continues RUN_DIR in place — drop --out or make it the same directory")
        config = read_config(run_dir, kind="language_model")
        changed = {k: v for k, v in model_flags.items() if config["model"].get(k) != v}
        if changed or args.data is not None:
            what = ", ".join("--" + k.replace("_", "-") for k in changed) or "--data"
            raise ConfigError(f"{what} cannot change when resuming — resume without it, or start a new --out")
        train_config = TrainConfig(**{**config["train"], **train_flags})
        path = _trained_on(config, "restore it to resume, or start a new --out")
        vocab = CharVocab.from_dict(config["vocab"])
        ids = encode_file(path, vocab)
        model = build_model(config)
        description = config["data"]["description"]
    else:
        if args.out is None and distributed.world_size() > 1:
            raise ConfigError("under torchrun pass --out RUN_DIR, so that every process trains the same run")
        run_dir = new_run_dir(args)
        train_config = TrainConfig(**train_flags)
        if not train_config.max_steps and not train_config.minutes:
            train_config.minutes = 10.0
            info("budget: 10 minutes (the default; set --minutes or --max-steps)")
        path, description = resolve_corpus(args.data)
        vocab, _ = build_vocab(path)
        ids = encode_file(path, vocab)
        torch.manual_seed(train_config.seed)
        model_flags.setdefault("cell", default_cell(resolve_device(train_config.device)))
        model = LanguageModel(LanguageModelConfig(vocab_size=len(vocab), **model_flags))
        config = {
            "format_version": FORMAT_VERSION, "kind": "language_model", "rnnkit_version": __version__,
            "model": model.config.to_dict(), "vocab": vocab.to_dict(), "train": train_config.to_dict(),
            "data": {"source": args.data or "builtin", "path": str(path.resolve()), "sha256": sha256_file(path),
                     "description": description, "characters": int(len(ids)), "val_fraction": 0.1},
        }
    train_ids, val_ids = split_tokens(ids)
    ranks = distributed.setup(resolve_device(train_config.device))
    trainer = Trainer(model, train_ids, val_ids, train_config, run_dir, show_progress=not args.quiet, ranks=ranks)
    if args.resume:
        trainer.resume()
        config["train"] = train_config.to_dict()
        trainer.pending_config = config  # written with the first checkpoint: a resume that fails changes nothing
    if not ranks.is_main:  # the other ranks train in step with rank 0 and leave the talking and writing to it
        interrupted = trainer.fit()["interrupted"]
        ranks.close()
        return 130 if interrupted else 0
    if not args.resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config)

    info(f"data: {description}; {len(vocab)} distinct characters, {len(train_ids):,} train / "
         f"{len(val_ids):,} validation")
    m = model.config
    info(f"model: {m.num_layers}x{m.hidden_size} {m.cell.upper()}, {model.num_parameters():,} parameters, "
         f"{'fused' if model.rnn.uses_fused else 'explicit'} path on {trainer.device}")
    verb = f"resuming at step {trainer.step}" if args.resume else "training"
    split = f" ({ranks.size} processes of {train_config.batch_size // ranks.size})" if ranks.size > 1 else ""
    info(f"{verb}: batch {train_config.batch_size}{split} x window {train_config.seq_len}, budget "
         f"{budget(train_config)}; run dir {run_dir}")

    summary = trainer.fit()
    ranks.close()
    best = summary["best_val_loss"]
    if stopped(summary, "rnnkit train", run_dir):
        return 130
    tps = summary["tokens"] / max(summary["elapsed_s"], 1e-9)
    info(f"done: {summary['step']} steps in {summary['elapsed_s']:.0f} s ({tps:,.0f} tokens/s overall); "
         f"validation loss {summary['val_loss']:.4f} nats/char ({summary['val_loss'] / math.log(2):.4f} bits/char), "
         f"best {best:.4f}; checkpoints, metrics.csv and loss.png in {run_dir}")
    if args.sample_length:
        info(f"sample (temperature 0.8, {args.sample_length} characters):")
        with trainer.averaged_weights():
            _stream_sample(trainer.model, vocab, "", args.sample_length, 0.8, None, None, train_config.seed)
    return 0


def default_cell(device) -> str:
    """`rnnkit train`'s cell where --cell is not given. On the CPU, the layer-normalised LSTM: rnnkit's compiled
    kernels train it at ~0.85x the fused LSTM's speed, and it ends a 10-minute Tiny Shakespeare run ~0.02 nats/char
    lower (BENCHMARKS.md, time to quality). On CUDA, the LSTM: cuDNN's fused kernel runs a whole window in one call,
    where any cell without one steps through Python op by op."""
    return "lnlstm" if device.type == "cpu" else "lstm"


def _launch(args: argparse.Namespace, train_flags: dict) -> int:
    """``rnnkit train --nproc N``: this command again without --nproc, in N processes under torchrun's launcher."""
    from rnnkit.checkpoint import read_config
    from rnnkit.train import TrainConfig, distributed

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1 (got {args.nproc})")
    if distributed.world_size() > 1:
        raise ConfigError("--nproc starts its own processes — drop it when running under torchrun")
    train = read_config(args.resume, kind="language_model").get("train", {}) if args.resume else {}
    batch = train_flags.get("batch_size", train.get("batch_size", TrainConfig.batch_size))
    distributed.check_split(batch, args.nproc, resuming=bool(args.resume))
    out = args.out or (None if args.resume else Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    argv = ["train", *(["--data", args.data] if args.data else []), *(["--out", str(out)] if out else []),
            *(["--resume", str(args.resume)] if args.resume else []), "--sample-length", str(args.sample_length),
            *(["--quiet"] if args.quiet else [])]
    for name, value in {**given(args, args.model_flags), **train_flags}.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return distributed.launch(args.nproc, argv)


# -- sample --------------------------------------------------------------------------------------------------
def _start_prompt(vocab) -> str:
    return "\n" if "\n" in vocab else vocab.chars[0]


def _stream_sample(model, vocab, prompt, length, temperature, top_k, top_p, seed, int8=False) -> None:
    from rnnkit.generate import generate

    ids = vocab.encode(prompt or _start_prompt(vocab)).tolist()
    out = sys.stdout
    out.write(prompt)
    generate(model, ids, length, temperature, top_k, top_p, 1, seed,
             on_tokens=lambda tok: (out.write(vocab.chars[int(tok[0])]), out.flush()), int8=int8)
    out.write("\n")
    out.flush()


def cmd_sample(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import load_run
    from rnnkit.generate import check_sampling, generate
    from rnnkit.train import resolve_device

    check_sampling(args.temperature, args.top_k, args.top_p, args.length, args.num_samples)
    model, vocab, _ = load_run(args.run_dir, args.weights, resolve_device(args.device))
    vocab.encode(args.prompt)  # unknown characters fail here, before anything is printed
    if args.num_samples == 1:
        _stream_sample(model, vocab, args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed,
                       args.int8)
        return 0
    ids = vocab.encode(args.prompt or _start_prompt(vocab)).tolist()
    tokens = generate(model, ids, args.length, args.temperature, args.top_k, args.top_p, args.num_samples, args.seed,
                      int8=args.int8)
    for i, row in enumerate(tokens.tolist()):
        print(f"--- sample {i + 1} ---")
        print(args.prompt + vocab.decode(row))
    return 0


# -- eval ----------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import load_run, weights_read
    from rnnkit.data import encode_file, resolve_corpus, split_tokens
    from rnnkit.errors import ConfigError, CorpusError
    from rnnkit.train import DynamicConfig, evaluate, resolve_device

    given = {k: getattr(args, "dynamic_" + k) for k in ("lr", "decay", "window")
             if getattr(args, "dynamic_" + k) is not None}
    if given and not args.dynamic:
        raise ConfigError(f"--dynamic-{next(iter(given))} only applies to dynamic evaluation — add --dynamic")
    dynamic = DynamicConfig(**given) if args.dynamic else None  # bad settings fail before the model loads
    device = resolve_device(args.device)
    model, vocab, config = load_run(args.run_dir, args.weights, device)
    args.weights = weights_read(args.run_dir, args.weights)  # what was read: best falls back to last
    trained_on = None
    if args.data is None:
        trained_on = _trained_on(config, "restore it, or name a text with --data to score the model on it")
    elif dynamic is not None:
        trained_on = _trained_on(config, "restore it: --dynamic reads its training part for the gradient scale")
    path = resolve_corpus(args.data)[0] if args.data is not None else trained_on
    ids = encode_file(path, vocab)
    tokens = split_tokens(ids)[1] if args.split == "val" else ids
    if len(tokens) < 2:
        raise CorpusError(f"{path} is too short to evaluate — pass a larger corpus")
    if dynamic is not None and dynamic.window >= len(tokens) - 1:  # one window: scored before any step
        raise ConfigError(f"--dynamic-window {dynamic.window} covers the whole text ({len(tokens):,} characters), "
                          "so the model would never adapt — pass a smaller window, such as 50")
    loss = evaluate(model, tokens, config["train"]["eval_streams"], device)
    result = {"val_loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss),
              "characters": int(len(tokens)) - 1, "data": str(path), "split": args.split, "weights": args.weights}
    if dynamic is not None:
        train_ids = ids if path == trained_on else encode_file(trained_on, vocab)  # read the corpus once
        result["dynamic"] = _dynamic(model, tokens, split_tokens(train_ids)[0], device, dynamic)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{loss:.4f} nats/char ({loss / math.log(2):.4f} bits/char, perplexity {math.exp(loss):.3f}) over "
          f"{result['characters']:,} "
          f"characters ({'last 10%' if args.split == 'val' else 'all'} of {path}, {args.weights} weights)")
    if dynamic is not None:
        d = result["dynamic"]
        print(f"dynamic evaluation: {d['loss']:.4f} nats/char ({d['bpc']:.4f} bits/char), against "
              f"{d['static_loss']:.4f} static on the same single stream (lr {dynamic.lr:g}, decay {dynamic.decay:g}, "
              f"window {dynamic.window})")
    return 0


def _trained_on(config: dict, fix: str) -> Path:
    """The corpus the run trained on: its recorded path, or its source found again ('shakespeare', 'builtin'),
    checked against the recorded checksum (a changed file would put training text in the validation part, or
    resume on other data); ``fix`` ends the error."""
    from rnnkit.data import resolve_corpus
    from rnnkit.data.datasets import sha256_file

    path = Path(config["data"]["path"])
    if not path.exists():
        try:
            path = resolve_corpus(config["data"]["source"])[0]
        except RnnkitError:
            raise RnnkitError(f"the corpus the run trained on ({path}) is gone — {fix}") from None
    recorded = config["data"].get("sha256")
    if recorded is not None and sha256_file(path) != recorded:
        raise RnnkitError(f"{path} is not the corpus the run trained on (its checksum differs) — {fix}")
    return path


def _dynamic(model, tokens, train_tokens, device, dynamic) -> dict:
    """Dynamic evaluation of ``tokens``, beside the static loss of the same single stream; the gradient scale
    comes from ``train_tokens``, the training part of the corpus the run trained on."""
    from rnnkit.train import dynamic_evaluate, evaluate

    loss = dynamic_evaluate(model, tokens, train_tokens, device, dynamic, progress=True)
    return {"loss": loss, "bpc": loss / math.log(2), "static_loss": evaluate(model, tokens, 1, device),
            "lr": dynamic.lr, "decay": dynamic.decay, "window": dynamic.window,
            "stats_characters": int(min(len(train_tokens), dynamic.stats_tokens)) - 1}

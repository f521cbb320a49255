"""``rnnkit export``: a trained run as an ONNX graph for inference without PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnkit.cli.common import info
from rnnkit.cliargs import output_file

CHECK_PROMPT = 100  # characters of the run's corpus that --check primes with


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to ONNX (onnxruntime, no PyTorch needed)",
                       description="Export a trained run to ONNX, the recurrent state an explicit input and output "
                                   "of the graph so that generation can step one token at a time. Needs the onnx "
                                   "extra: pip install 'rnnkit[onnx]'.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--onnx", type=output_file(".onnx"), metavar="FILE", required=True, help="the .onnx file to write")
    p.add_argument("--check", action="store_true",
                   help="run onnxruntime against PyTorch on a real prompt and report the largest differences; "
                        "exit status 1 if any exceeds 1e-4 or greedy sampling differs")
    p.add_argument("--prompt", help=f"text for --check (default: the first {CHECK_PROMPT} characters of the run's "
                                    "corpus)")
    p.add_argument("--length", type=int, default=200, help="greedy tokens --check compares (default: 200)")
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="best: the checkpoint with the lowest validation loss, or the latest until a first "
                        "validation; last: the latest weights (default: best)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import load_run
    from rnnkit.errors import ConfigError
    from rnnkit.onnx_export import check_language_model, export_onnx, require_onnx

    if args.length <= 0:
        raise ConfigError(f"--length must be positive (got {args.length})")
    model, vocab, config = load_run(args.run_dir, args.weights)
    require_onnx()
    prompt = _check_prompt(args, vocab, config) if args.check else None  # a bad prompt fails before the export
    path = export_onnx(model, config, args.onnx)
    m = model.config
    state = "h_0, c_0" if isinstance(model.init_state(1), tuple) else "h_0"
    info(f"exported {args.run_dir} ({m.num_layers}x{m.hidden_size} {m.cell.upper()}, {model.num_parameters():,} "
         f"parameters) to {path} ({path.stat().st_size / 1e6:.2f} MB); inputs tokens (B, T) and the state "
         f"({state}), outputs logits (B, T, {len(vocab)}) and the next state")
    if prompt is None:
        return 0
    r = check_language_model(model, path, vocab.encode(prompt).tolist(), args.length)
    print(f"check on a {r['prompt_tokens']}-character prompt: max |difference| logits {r['max_abs_logits']:.2e}, "
          f"state {r['max_abs_state']:.2e}, logits one token per call {r['max_abs_logits_stepwise']:.2e}; greedy "
          f"{r['greedy_tokens']} characters: " + ("identical" if r["greedy_agree"] == r["greedy_tokens"] else
                                                 f"first difference at character {r['greedy_agree'] + 1}"))
    worst = max(r["max_abs_logits"], r["max_abs_state"], r["max_abs_logits_stepwise"])
    return 0 if worst <= 1e-4 and r["greedy_agree"] == r["greedy_tokens"] else 1


def _check_prompt(args: argparse.Namespace, vocab, config: dict) -> str:
    from rnnkit.errors import ConfigError

    if args.prompt is not None:
        if not args.prompt:
            raise ConfigError("--prompt is empty — give at least one character")
        vocab.encode(args.prompt)  # unknown characters: a one-line error
        return args.prompt
    path = Path(config.get("data", {}).get("path", ""))
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(CHECK_PROMPT)
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"the run's corpus {path} cannot be read for --check — pass --prompt TEXT") from None

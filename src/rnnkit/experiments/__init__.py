"""How an RNN learns: synthetic tasks that isolate long-range memory, and the gradients that make or break it.

    rnnkit experiment adding --cell lstm --T 200      # the adding problem: MSE vs the 0.167 line
    rnnkit experiment copy --cell gru --T 100         # copy memory: cross-entropy vs the memoryless line
    rnnkit experiment gradient-flow                   # ‖∂L/∂h_t‖ against t; exploding gradients and clipping

Each writes a CSV and a PNG into ``--out`` (default ``runs/experiment-NAME-<date-time>``; never over an earlier
run's), prints progress on stderr, and
prints one JSON object with its final figures as the last line of stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnkit.cliargs import add_dataclass_args, given
from rnnkit.experiments.adding import AddingConfig, AddingRegressor, adding_batch, run_adding
from rnnkit.experiments.common import print_result
from rnnkit.experiments.copy_memory import CopyConfig, CopyTagger, baseline_loss, copy_batch, run_copy
from rnnkit.experiments.gradient_flow import GradientFlowConfig, run_gradient_flow, state_gradient_norms

EXPERIMENTS = {
    "adding": (AddingConfig, run_adding, "the adding problem: sum the two marked values of a long sequence"),
    "copy": (CopyConfig, run_copy, "copy memory: play back 10 symbols after a delay of T steps"),
    "gradient-flow": (GradientFlowConfig, run_gradient_flow,
                      "vanishing gradients per cell, exploding gradients with and without clipping"),
}


def add_parsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``experiment {adding,copy,gradient-flow}`` to the CLI's sub-commands; ``args.func(args)`` runs one."""
    parser = subparsers.add_parser(
        "experiment", help="synthetic experiments: how an RNN learns (adding, copy, gradient-flow)",
        description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="NAME")
    for name, (config_class, runner, summary) in EXPERIMENTS.items():
        module_doc = __import__(runner.__module__, fromlist=["_"]).__doc__
        p = sub.add_parser(name, help=summary, description=module_doc.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--out", type=Path, metavar="DIR",
                       help=f"directory for the CSV and PNG, which must not hold an earlier run's (default: "
                            f"runs/experiment-{name}-<date-time>)")
        flags = add_dataclass_args(p, config_class, "experiment")
        p.set_defaults(func=run_experiment, config_class=config_class, runner=runner, config_flags=flags)
    return parser


def run_experiment(args: argparse.Namespace) -> int:
    """The ``experiment`` handler: build the config from the flags given, run, print the result as JSON."""
    config = args.config_class(**given(args, args.config_flags))
    print_result(args.runner(config, args.out))
    return 0


__all__ = [
    "EXPERIMENTS", "AddingConfig", "AddingRegressor", "CopyConfig", "CopyTagger", "GradientFlowConfig",
    "adding_batch", "add_parsers", "baseline_loss", "copy_batch", "run_adding", "run_copy",
    "run_experiment", "run_gradient_flow", "state_gradient_norms",
]

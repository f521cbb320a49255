"""The ``rnnkit`` command line.

Each module listed in ``COMMANDS`` adds its verbs to the sub-command parser through ``add_parsers(sub)`` and
imports what its verbs need only when they run, so ``rnnkit --help`` stays fast. Every error a user can cause
prints one line (``error: what is wrong — what to do``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rnnkit import __version__
from rnnkit.cliargs import Parser
from rnnkit.errors import RnnkitError
from rnnkit.heap import keep_freed_memory

COMMANDS = (
    "rnnkit.cli.lm",  # train, sample, eval
    "rnnkit.experiments",  # experiment adding|copy|gradient-flow
    "rnnkit.cli.classify",  # classify train|eval|predict
    "rnnkit.cli.forecast",  # forecast train|predict|eval
    "rnnkit.cli.tag",  # tag train|eval|predict
    "rnnkit.cli.generate",  # generate train|sample|eval
    "rnnkit.cli.translate",  # translate train|translate|eval
    "rnnkit.cli.data",  # data handwriting|speech
    "rnnkit.cli.recognize",  # recognize train|predict|eval
    "rnnkit.cli.web",  # serve, visualize
    "rnnkit.cli.export",  # export --onnx
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rnnkit", description="Recurrent neural networks: language models, classifiers, taggers, "
                                               "forecasters, conditional generators, translators and recognisers — "
                                               "train, evaluate, sample, serve, export.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        importlib.import_module(module).add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a trailing nargs="*" positional at the first option ("predict RUN --top 2 TEXT");
    # verbs that name such a positional in `extra_positionals` take the words after the options too
    where = getattr(args, "extra_positionals", None)
    if extra and where and not any(e.startswith("-") for e in extra):
        setattr(args, where, [*getattr(args, where), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    keep_freed_memory()
    try:
        return args.func(args) or 0
    except RnnkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rnnkit sample ... | head`
        return 0
    except OSError as e:  # a path the system refuses: read-only, full, a directory where a file goes, ...
        if e.filename is None and e.filename2 is None:
            raise  # not about a path the user gave (out of memory, a socket): the traceback says more
        print(f"error: {_os_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _os_message(e: OSError) -> str:
    """One line for an OSError: the path the user named (the target of a rename, not its temporary file), why the
    system refused it, and what to do."""
    where = e.filename2 if e.filename2 is not None else e.filename
    return f"{where}: {e.strerror or e} — check the path, its permissions and the free space"


if __name__ == "__main__":
    sys.exit(main())

"""``rnnkit serve|visualize``: the web page, and the visualiser as a PNG for people without a browser."""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
from pathlib import Path

from rnnkit.cli.common import add_load_args, info
from rnnkit.cliargs import output_file
from rnnkit.errors import ConfigError, RnnkitError

MAX_CONNECTIONS = 1024  # uvicorn answers 503 beyond this many open connections: the hard cap under any load
MAX_PICTURE_TEXT = 5000  # characters in one PNG; more would not be readable


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The web verbs: serve, visualize."""
    p = sub.add_parser("serve", help="a web page to sample from a model and look at its units",
                       description="Serve a page (and its JSON API) to sample from a trained model, colour text by a "
                                   "unit's activation and list the units that track simple text features. Needs "
                                   "the web extra: pip install 'rnnkit[web]'.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; the page has no login)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on, 0 for any free one (default: 8000)")
    add_load_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("visualize", help="colour a text by one unit's activation, as a PNG",
                       description="Draw TEXT with each character coloured by a hidden unit's (or an LSTM cell's) "
                                   "activation after reading it: blue negative, red positive.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--text", required=True, help="the text to run through the model")
    p.add_argument("--unit", type=int, help="the unit to colour by, 0..H-1")
    p.add_argument("--layer", type=int, help="the layer, 0..L-1 (default: the last)")
    p.add_argument("--state", choices=("h", "c"), default="h", help="h: the layer's output (default); c: LSTM cell")
    p.add_argument("--out", type=output_file(".png"), help="PNG to write (default: unit-L-S-N.png)")
    p.add_argument("--width", type=int, default=80, help="characters per line before wrapping (default: 80)")
    p.add_argument("--list-units", action="store_true",
                   help="print, as JSON, the units that track simple features of TEXT best, and draw nothing "
                        "unless --unit is given")
    add_load_args(p)
    p.set_defaults(func=cmd_visualize)


# -- serve ---------------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from rnnkit.web.app import create_app
    except ImportError as e:
        raise RnnkitError(f"rnnkit serve needs the web extra ({e.name or 'fastapi'} is not installed) — "
                          "pip install 'rnnkit[web]'") from None
    from rnnkit.train import resolve_device

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535 (got {args.port})")
    app = create_app(args.run_dir, args.weights, resolve_device(args.device))  # a bad run fails before binding
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    info(f"serving {args.run_dir} on http://{shown}:{port}/ (Ctrl-C stops)")
    if not _is_loopback(host):
        info(f"warning: {host} is reachable from other machines, and the page has no login")
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=MAX_CONNECTIONS, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket, so a busy port is a one-line error and port 0 picks a free one that we can print."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}) — pass another --port or --host") \
            from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- visualize -----------------------------------------------------------------------------------------------
def cmd_visualize(args: argparse.Namespace) -> int:
    from rnnkit.checkpoint import load_run
    from rnnkit.inspect_units import colour_scale, plot_unit, rank_units, trace_text
    from rnnkit.train import resolve_device

    if args.unit is None and not args.list_units:
        raise ConfigError("pass --unit N to draw (or --list-units to see which units are worth looking at)")
    if not args.text:
        raise ConfigError("--text is empty — pass the text to run through the model")
    if len(args.text) > MAX_PICTURE_TEXT:
        raise ConfigError(f"--text holds {len(args.text)} characters — pass at most {MAX_PICTURE_TEXT}")
    if args.width < 1:
        raise ConfigError(f"--width must be positive (got {args.width})")
    model, vocab, _ = load_run(args.run_dir, args.weights, resolve_device(args.device))
    tr = trace_text(model, vocab, args.text)
    if args.list_units:
        print(json.dumps(rank_units(tr), indent=1))
    if args.unit is None:
        return 0
    layer = tr.h.shape[0] - 1 if args.layer is None else args.layer
    values = tr.unit(layer, args.state, args.unit)
    out = args.out or Path(f"unit-{layer}-{args.state}-{args.unit}.png")
    title = f"{args.run_dir.resolve().name}: layer {layer} {args.state}[{args.unit}]"
    plot_unit(args.text, values, colour_scale(values, args.state), out, title, args.width)
    info(f"wrote {out}")
    return 0

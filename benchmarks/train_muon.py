"""`rnnkit train` with the Muon optimizer on the recurrent weight matrices, AdamW on the rest.

    python benchmarks/train_muon.py [--muon-lr-scale S] train --data ../shared/data/tinyshakespeare.txt \
        --minutes 10 --out runs/muon
    rnnkit eval runs/muon --json

An experiment, not a feature: everything after the script's own flag is `rnnkit`'s command line, run in this
process with one change, the optimizer. `torch.optim.Muon` (momentum 0.95, Nesterov, five Newton-Schulz steps)
takes the 2-D weights of the recurrent stack (`rnn.*`: the input and recurrent matrices of each layer); AdamW keeps
the embedding, the output layer and the biases, as in `rnnkit train`. Muon's rate is the scheduled AdamW rate times
``--muon-lr-scale``, with Moonshot's adjustment (``match_rms_adamw``) that lets it reuse AdamW's rate and weight
decay. Checkpoints hold both optimizers' state, so `--resume` works.
"""

from __future__ import annotations

import argparse
import sys

import torch

import rnnkit.train.loop as loop
from rnnkit.cli import main


class MuonAdamW:
    """AdamW for some parameters, Muon for the others, stepped together; the loop sets one ``lr`` for all groups.

    Muon's groups take that rate times ``scale`` (``LrScaled`` below).
    """

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon, scale: float) -> None:
        self.adamw, self.muon = adamw, muon
        self.param_groups = adamw.param_groups + [LrScaled(g, scale) for g in muon.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def state_dict(self) -> dict:
        """Both parts in one dict, Muon's parameter ids after AdamW's (the layout the checkpoint code reads)."""
        a, m = self.adamw.state_dict(), self.muon.state_dict()
        shift = sum(len(g["params"]) for g in a["param_groups"])
        groups = a["param_groups"] + [{**g, "params": [p + shift for p in g["params"]]} for g in m["param_groups"]]
        return {"state": {**a["state"], **{k + shift: v for k, v in m["state"].items()}}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        n = len(self.adamw.param_groups)
        shift = sum(len(g["params"]) for g in state_dict["param_groups"][:n])
        state, groups = state_dict["state"], state_dict["param_groups"]
        self.adamw.load_state_dict({"state": {k: v for k, v in state.items() if k < shift},
                                    "param_groups": groups[:n]})
        self.muon.load_state_dict({"state": {k - shift: v for k, v in state.items() if k >= shift},
                                   "param_groups": [{**g, "params": [p - shift for p in g["params"]]}
                                                    for g in groups[n:]]})


class LrScaled:
    """A Muon param group seen through the loop's ``group["lr"] = lr``: stores ``lr * scale``."""

    def __init__(self, group: dict, scale: float) -> None:
        self.group, self.scale = group, scale

    def __setitem__(self, key, value) -> None:
        self.group[key] = value * self.scale if key == "lr" else value

    def __getitem__(self, key):
        return self.group[key]


ADAMW = loop.build_optimizer  # the loop's AdamW (groups, betas, weight decay), kept before __main__ replaces it


def build_optimizer(scale: float):
    def build(model: torch.nn.Module, config: loop.LoopConfig) -> MuonAdamW:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        hidden = [p for n, p in named if p.dim() == 2 and n.startswith("rnn.")]
        if not hidden:
            raise SystemExit("train_muon.py: the model has no rnn.* weight matrices for Muon")
        adamw = ADAMW(model, config)  # rnnkit's own, less the weights Muon takes (no step taken yet: no state)
        ids = {id(p) for p in hidden}
        for group in adamw.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        muon = torch.optim.Muon(hidden, lr=config.lr * scale, weight_decay=config.weight_decay,
                                adjust_lr_fn="match_rms_adamw")
        return MuonAdamW(adamw, muon, scale)
    return build


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--muon-lr-scale", type=float, default=1.0, help="Muon's rate over AdamW's (default: 1)")
    args, rest = parser.parse_known_args()
    loop.build_optimizer = build_optimizer(args.muon_lr_scale)
    sys.exit(main(rest))

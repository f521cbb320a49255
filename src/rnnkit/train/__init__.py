"""Training: the shared loop (``loop``) and the task trainers built on it (``tbptt`` for language models)."""

from rnnkit.train.device import resolve_device
from rnnkit.train.loop import LoopConfig, LoopTrainer, build_optimizer
from rnnkit.train.tbptt import TrainConfig, Trainer, detach_state, evaluate

__all__ = [
    "LoopConfig", "LoopTrainer", "TrainConfig", "Trainer", "build_optimizer", "detach_state", "evaluate",
    "resolve_device",
]

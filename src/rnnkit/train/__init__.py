"""Training: the shared loop (``loop``) and the task trainers built on it (``tbptt`` for language models)."""

from rnnkit.train.config import LoopConfig, build_optimizer
from rnnkit.train.device import resolve_device
from rnnkit.train.dynamic import DynamicConfig, dynamic_evaluate
from rnnkit.train.loop import LoopTrainer
from rnnkit.train.tbptt import TrainConfig, Trainer, detach_state, evaluate

__all__ = [
    "DynamicConfig", "LoopConfig", "LoopTrainer", "TrainConfig", "Trainer", "build_optimizer", "detach_state",
    "dynamic_evaluate", "evaluate", "resolve_device",
]

"""How much of the pretrained network to train: one small registered class per strategy.

`base` holds the contract and the registry; `builtin` the six strategies graft ships.
"""

from . import builtin  # noqa: F401  (registers the built-in strategies)
from .base import STRATEGIES, HeadPhase, Strategy, get_strategy, register, strategies_for_case, unregister

__all__ = ["STRATEGIES", "HeadPhase", "Strategy", "get_strategy", "register", "strategies_for_case", "unregister"]

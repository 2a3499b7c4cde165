"""The new top grafted onto a backbone: a linear layer, or one hidden layer with dropout."""

from .head import HeadConfig, create_head, final_linear

__all__ = ["HeadConfig", "create_head", "final_linear"]

"""The course's experiment, for the user's own data: several strategies, one budget, one table."""

from .comparison import DEFAULT_STRATEGIES, Comparison, StrategyRow, compare, num, pct

__all__ = ["DEFAULT_STRATEGIES", "Comparison", "StrategyRow", "compare", "num", "pct"]

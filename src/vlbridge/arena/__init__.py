"""The connector arena: train every connector on the same encoder, LLM, data, seed and budget, then compare.

``run_arena(ArenaConfig)`` writes one run directory with a table (Markdown + CSV), plots and the resolved
config of every connector; see ``vlbridge.arena.runner``. ``vlbridge arena`` is its command line.
"""
from .config import ARENA_PRESETS, ArenaConfig, get_arena_preset

__all__ = ["ARENA_PRESETS", "ArenaConfig", "get_arena_preset"]

"""Adapters that let other tools use vlbridge models (e.g. the lmms-eval harness)."""

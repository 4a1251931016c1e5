"""Grounding: boxes written as text (Shikra/LION style) and Groma-style region tokens."""

"""Figures: model answers on images (and, later, attention masks and windows)."""

"""Figures: model answers drawn on images, ParGo's attention masks and windows."""

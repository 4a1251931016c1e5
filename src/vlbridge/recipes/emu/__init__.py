"""Emu's pipelines: image generation in context, the visual decoder stage, the measurement of the claims."""

"""Pipelines that compose model parts for one paper or one job: vision pretraining, stage runners, Groma's
proposer stage and grounded chat, LaVIT's tokenizer stage, preparation, measurement and image generation."""

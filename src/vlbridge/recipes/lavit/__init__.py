"""LaVIT's pipelines: the visual-tokenizer stage, text-to-image records and the initial model, image generation and
its measurement."""

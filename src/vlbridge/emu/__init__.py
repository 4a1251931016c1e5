"""Emu's model parts: the Causal Transformer, the regression head and its objective, the visual decoders.

``causal_transformer`` turns encoder features into M visual embeddings (M learned queries, causal
self-attention, cross-attention to the features); ``regression`` holds the head that regresses the next visual
embedding from the LLM's last hidden state, its loss and the collapse guard; ``embedding_grid``,
``palette_decoder`` and ``flow_decoder`` turn M embeddings back into pixels. The ``emu`` connector
(``connectors/emu.py``) assembles them; the pipelines (decoder training, generation, measurement) live in
``recipes/emu``.
"""

"""LaVIT (Jin et al., ICLR 2024): a dynamic discrete visual tokenizer and unified next-token training.

An image's patch features are scored by a token *selector* (keep/drop), the dropped patches are merged into
the kept ones by a token *merger* (causal self-attention among kept tokens, cross-attention to dropped
ones), and the kept tokens are *quantized* into a codebook. The LLM reads the continuous merger outputs
(understanding, via the ``lavit`` connector) and writes the discrete code ids (generation), which a feature
decoder and a small conv pixel decoder turn back into an image.

Files (model parts): ``options`` (sizes), ``selector``, ``attention`` (masked attention with straight-through
key weights), ``merger``, ``quantizer``, ``feature_decoder``, ``pixel_decoder``, ``visual_tokenizer`` (all of
them, save/load), ``vocabulary`` ([IMG], [/IMG], code ids, id suppression) and ``grid`` (a PNG grid of
samples). The pipelines that train and use them live in ``vlbridge.recipes.lavit``: ``tokenizer_stage`` (the
``tokenizer`` stage), ``prepare`` (text->image records, the initial LLM), ``image_generation`` (codes from the
LLM, CFG) and ``measure`` (figures); scene captions are in ``vlbridge.data.scene_captions`` and the image
checker in ``vlbridge.eval.image_checker``.
"""

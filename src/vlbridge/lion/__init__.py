"""JiuTian-LION's model parts: the vision aggregator, the mixture of adapters with a task router, the image
tagger and the soft-prompted tag sentence. The connector that assembles them is ``connectors/lion.py``; the
staged recipe and the tagger's training are in ``recipes/lion/``."""

"""vlbridge: build, train, evaluate, compare and serve multimodal LLMs with swappable connectors."""
__version__ = "0.1.0"

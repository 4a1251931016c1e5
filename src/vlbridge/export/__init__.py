"""Exporting vlbridge models to other libraries' formats (``hf_llava``: transformers' LLaVA)."""

"""The model: vision tower, LLM, tokenizer, VLBridgeModel (encoder -> connector -> LLM), devices and precision."""

"""Evaluation: generate answers for records and score each task with its metric (VQA accuracy, CIDEr, POPE, REC ...)."""

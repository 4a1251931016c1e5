"""Groma's pipelines: the proposer (det) stage and grounded chat."""

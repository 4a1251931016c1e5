"""Training: the loop, stages applied to a model, data streams, checkpoints, and the distributed strategies."""

"""Data: LLaVA-style records and their validation, image loading, boxes as text, chat templates, the
training/eval dataset, and the ShapesWorld generator (``shapesworld``)."""

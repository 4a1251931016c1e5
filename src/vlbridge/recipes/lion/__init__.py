"""JiuTian-LION's pipelines: the staged recipe (encoder, tagger, tagged data, stages, per-stage evaluation), the
tagger's training and the writing of tagged data."""

"""Training: self-supervised pretraining, the finetuning loop, checkpoints (and the typed
pretrained-model boundary, :func:`stica.train.checkpoint.load_pretrained`), the GDT import.
Nothing here imports :mod:`stica.eval`."""

"""Training: self-supervised pretraining, supervised finetuning, checkpoints."""

"""STiCA encoders: video trunks (``video``), audio trunk (``audio``), pooling, heads, feature
crops (``crops``), the full model (``stica``), the finetuning classifier (``classifier``) and the
trunks' feature sizes (``dims``, no torch).

Import the modules directly: this package imports nothing on its own, so that the params
(:mod:`stica.config`) can read ``dims`` without loading torch.
"""

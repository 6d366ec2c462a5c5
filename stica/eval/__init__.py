"""Evaluation building blocks: features files, FAISS retrieval, audio linear probe, plots, metrics.

Modules (import them directly; this package imports nothing heavy on its own):
``features_io`` (HDF5 features file), ``retrieval`` (recall@k), ``audio_linear`` (ESC-50 /
DCASE2014 linear probe), ``plots`` (PNG gallery, confusion matrix), ``metrics`` (environment,
baselines, atomic JSON).
"""

"""Evaluation: features, retrieval, class probes, finetuning, the audio probe, reports.

Modules (import them directly; this package imports nothing heavy on its own):
``features`` (extract-features) and ``features_io`` (HDF5 features file), ``retrieval`` (recall@k)
and ``retrieval_report`` (the retrieve stage's record and gallery), ``probes`` (kNN, linear),
``finetune`` (10 clips x 3 crops, the run over splits), ``audio_eval`` / ``audio_linear`` (ESC-50 /
DCASE2014 linear probe), ``pretext`` (held-out audio-video matching), ``demo_bench``
(``stica bench demo``), ``plots`` (PNG gallery, confusion matrix), ``metrics`` (metrics files,
provenance, baselines). Evaluation may import :mod:`stica.train` (checkpoints, the finetuning
loop); training never imports evaluation.
"""

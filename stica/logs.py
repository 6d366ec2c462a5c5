"""Logging set-up shared by all stages: progress on stderr, a full log file beside the outputs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGER_NAME = "stica"


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, when given, append to ``log_file`` (its folder is created).

    Under torchrun only the first process (``RANK`` 0) logs progress and writes the file; the
    others print warnings and errors alone, prefixed with their rank, so N processes do not
    repeat every line N times.
    """
    rank = int(os.environ.get("RANK", "0"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(
        logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s")
    )
    if rank != 0:
        stream.setLevel(max(level, logging.WARNING))
    logger.addHandler(stream)
    if log_file is not None and rank == 0:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(file_handler)
    logger.propagate = False
    return logger

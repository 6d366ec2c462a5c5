"""Logging under torchrun: only the first process logs progress and writes the log file."""

from __future__ import annotations

import logging

import pytest

from stica.logs import get_logger, setup_logging


@pytest.fixture(autouse=True)
def restore_handlers():
    logger = logging.getLogger("stica")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _emit(tmp_path, monkeypatch, capsys, rank):
    monkeypatch.setenv("RANK", str(rank))
    log_file = tmp_path / f"rank{rank}" / "stage.log"
    setup_logging(log_file)
    log = get_logger("test")
    log.info("progress line")
    log.warning("something odd")
    for handler in logging.getLogger("stica").handlers:
        handler.flush()
    return log_file, capsys.readouterr().err


def test_first_process_logs_everything(tmp_path, monkeypatch, capsys):
    log_file, err = _emit(tmp_path, monkeypatch, capsys, rank=0)
    assert "progress line" in err and "something odd" in err
    assert "progress line" in log_file.read_text()


def test_other_processes_log_only_warnings_with_their_rank(tmp_path, monkeypatch, capsys):
    log_file, err = _emit(tmp_path, monkeypatch, capsys, rank=1)
    assert "progress line" not in err
    assert "[rank 1] something odd" in err
    assert not log_file.exists()

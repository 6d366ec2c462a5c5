"""Live experiment tracking of training runs, the DVC way: DVCLive's files under one folder.

A run logs its params once and its metrics at every step; the folder then holds

- ``params.yaml``: the params of the run;
- ``metrics.json``: the latest value of every metric and the step (a DVC metric);
- ``plots/metrics/<name>.tsv``: one ``step<TAB><metric>`` row per step (DVC plots); a name with
  slashes (``split1/pretrained/train_loss``) is a sub-folder.

With ``dvclive`` installed this is DVCLive itself (``dvc exp show`` / ``dvc plots`` / Studio and
the VS Code extension follow the run live); without it, or with ``STICA_DVCLIVE=0``, a plain
writer produces the same files, so the pipeline's plots and metrics exist either way and
training never depends on the package.

Resuming at step ``s`` keeps the rows of steps <= ``s`` and drops the later ones (written after
the checkpoint the run resumes from), so a killed and resumed run has one row per step.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stica.logs import get_logger

log = get_logger("tracking")

ENV_SWITCH = "STICA_DVCLIVE"  # "0" / "false" / "off": the plain writer even where dvclive exists
PLOTS = Path("plots") / "metrics"


def dvclive_enabled() -> bool:
    """Whether DVCLive is wanted (``$STICA_DVCLIVE``) and importable."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    try:
        import dvclive  # noqa: F401
    except ImportError:
        log.warning("dvclive is not installed: live metrics are written without it")
        return False
    return True


class Tracker:
    """Params once, then named scalar metrics per step, in DVCLive's layout under ``folder``.

    ``resume_step``: continue a run whose steps up to it are already logged (None: start over).
    """

    def __init__(
        self,
        folder: str | Path,
        params: Mapping[str, Any],
        resume_step: int | None = None,
        use_dvclive: bool | None = None,
    ) -> None:
        self.folder = Path(folder)
        resume = resume_step is not None and resume_step > 0
        if resume:
            _drop_rows_after(self.folder / PLOTS, resume_step)
        else:
            _clean(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.live = None
        self.backend = "files"
        if dvclive_enabled() if use_dvclive is None else use_dvclive:
            self.live = _start_dvclive(self.folder, params, resume)
        if self.live is not None:
            self.backend = "dvclive"
        else:
            self._summary: dict[str, Any] = (
                _read_json(self.folder / "metrics.json") if resume else {}
            )
            (self.folder / "params.yaml").write_text(
                yaml.safe_dump(_plain(params), sort_keys=False)
            )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log ``metrics`` (name -> number) at ``step``; ``metrics.json`` then shows them."""
        if self.live is not None:
            self.live.step = step
            for name, value in metrics.items():
                self.live.log_metric(name, float(value))
            self.live.next_step()  # writes metrics.json (and updates Studio, if configured)
            return
        for name, value in metrics.items():
            path = self.folder / PLOTS / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with open(path, "a", newline="") as f:
                writer = csv.writer(f, delimiter="\t", lineterminator="\n")
                if new:
                    writer.writerow(["step", name.rsplit("/", 1)[-1]])
                writer.writerow([step, float(value)])
            node = self._summary
            *parents, leaf = name.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = float(value)
        self._summary["step"] = step
        tmp = self.folder / ".metrics.json.tmp"
        tmp.write_text(json.dumps(self._summary, indent=4) + "\n")
        tmp.replace(self.folder / "metrics.json")

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None


def _start_dvclive(folder: Path, params: Mapping[str, Any], resume: bool) -> Any:
    """A DVCLive logger, or None (with a warning) where it cannot start: tracking must never
    stop a training run (e.g. dvclive 3.49 raises in a git repository without commits)."""
    from dvclive import Live

    try:
        # dvcyaml=False: the pipeline's dvc.yaml declares these files; save_dvc_exp=False: a run
        # outside `dvc exp run` must not create experiments behind the user's back
        live = Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=False, report=None)
        live.log_params(_plain(params))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        log.warning(f"dvclive could not start ({first}); live metrics are written without it")
        return None
    return live


def _clean(folder: Path) -> None:
    """Remove what a previous run left (DVCLive does the same for its own files)."""
    shutil.rmtree(folder / PLOTS, ignore_errors=True)
    for name in ("metrics.json", "params.yaml"):
        (folder / name).unlink(missing_ok=True)


def _drop_rows_after(plots: Path, last_step: int) -> None:
    """Keep the header and the complete rows of steps <= ``last_step`` (a killed run may have
    left a half-written last line)."""
    for path in plots.rglob("*.tsv") if plots.is_dir() else ():
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        kept = rows[:1] + [r for r in rows[1:] if _step_of(r) <= last_step]
        if kept != rows or not path.read_text().endswith("\n"):
            with open(path, "w", newline="") as f:
                csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)


def _step_of(row: list[str]) -> float:
    try:
        float(row[1])  # the value is complete too
        return float(row[0])
    except (IndexError, ValueError):
        return float("inf")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["ENV_SWITCH", "Tracker", "dvclive_enabled"]

"""Experiment trackers for ``training.report_to``: accelerate's own, writing under ``RUN/logs/``.

- ``tensorboard``: accelerate's TensorBoardTracker; event files in ``RUN/logs/tensorboard/``.
- ``mlflow``: accelerate's MLflowTracker, pointed at a local SQLite store in ``RUN/logs/mlflow/`` unless
  ``MLFLOW_TRACKING_URI`` names another server (then that one is used, as MLflow users expect).
- ``jsonl``: one JSON object a line in ``RUN/logs/metrics.jsonl`` (``{"step": N, "key": value...}``),
  readable with no library at all. accelerate has no such tracker; ``GeneralTracker`` is its hook for one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError
from ..runtime.extras import require_extra

LOGS_DIR = "logs"


def make_trackers(names, run_dir: Path) -> list:
    """Tracker objects for accelerate's ``log_with``; an uninstalled backend is a one-line config error."""
    from accelerate.tracking import GeneralTracker

    class JsonlTracker(GeneralTracker):
        name = "jsonl"
        requires_logging_directory = True
        main_process_only = True

        def __init__(self, path: Path):
            super().__init__()
            self.path = Path(path)

        @property
        def tracker(self):
            return self.path

        def start(self):
            self.path.parent.mkdir(parents=True, exist_ok=True)

        def store_init_configuration(self, values: dict):
            self._write({"config": values})

        def log(self, values: dict, step=None, **kwargs):
            self._write({"step": step, **values})

        def _write(self, record: dict) -> None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    logs = Path(run_dir) / LOGS_DIR
    trackers = []
    for name in dict.fromkeys(names or ()):
        if name == "jsonl":
            trackers.append(JsonlTracker(logs / "metrics.jsonl"))
        elif name == "tensorboard":
            _require("tensorboard", "tensorboard")
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker("tensorboard", str(logs)))
        elif name == "mlflow":
            _require("mlflow", "mlflow")
            trackers.append(_mlflow_tracker(logs / "mlflow"))
        else:  # pragma: no cover - the config's Literal rejects other names first
            raise ConfigError(f"training.report_to: unknown tracker {name!r}")
    return trackers


def _require(module: str, package: str) -> None:
    require_extra("training.report_to", module, "tracking", package, alternative="; or remove it from report_to")


def check_trackers(names) -> None:
    """Every tracker ``names`` asks for is installed (before the run reads its data)."""
    for name in names or ():
        if name in ("tensorboard", "mlflow"):
            _require(name, name)


def _mlflow_tracker(folder: Path):
    from accelerate.tracking import MLflowTracker

    class LocalMLflowTracker(MLflowTracker):
        """accelerate's tracker, with the tracking store under the run folder unless the user named one."""

        def start(self):
            import logging

            import mlflow

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about creating its tables
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                folder.mkdir(parents=True, exist_ok=True)
                mlflow.set_tracking_uri(mlflow_store_uri(folder))
            super().start()

        def finish(self):
            import mlflow

            mlflow.end_run()

    return LocalMLflowTracker(experiment_name="tuneforge", logging_dir=str(Path(folder).resolve() / "artifacts"),
                              run_name=Path(folder).parents[1].name)


def mlflow_store_uri(folder: Path) -> str:
    """The local MLflow store of a run (``RUN/logs/mlflow/mlflow.db``): what a reader passes to ``MlflowClient``.

    SQLite, MLflow's recommended local backend: its plain-folder store is in maintenance mode and
    refuses to start unless told otherwise (MLflow 3).
    """
    return "sqlite:///" + str((Path(folder) / "mlflow.db").resolve())

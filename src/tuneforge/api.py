"""The Python face: ``train``, ``load``, ``evaluate``, ``predict``. The CLI is a thin layer over these.

Nothing here depends on the task: training goes through the one driver (:mod:`tuneforge.driver`),
loading returns the predictor class the saved model's task names (:mod:`tuneforge.tasks`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from .config import Config, config_from_dict, load_config
from .driver import RunResult, train_run
from .loading import load_predictor
from .tasks import get_task
from .tasks.capabilities import Perturbable, require
from .tasks.predictor import Predictor, check_read_options, evaluate_across_processes
from .tasks.text_classification import TextClassifier
from .tasks.token_classification import TokenClassifier
from .training.callbacks import Callback
from .evaluation.robustness import robustness

__all__ = ["RunResult", "TextClassifier", "TokenClassifier", "evaluate", "load", "predict", "serve", "train"]


def _as_config(config: Config | dict | str | Path, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        return config_from_dict(config.model_dump(mode="json"), overrides=overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, overrides=overrides)
    return load_config(config, overrides)


def train(
    config: Config | dict | str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train as the config says (any task, any method); returns the run folder and its metrics.

    ``callbacks``: :class:`tuneforge.training.callbacks.Callback` objects attached to the loop.
    """
    return train_run(_as_config(config, overrides), resume=resume, overwrite=overwrite, callbacks=callbacks)


def load(run: str | Path, device: str | None = None, precision: str = "auto", engine: str = "torch") -> Predictor:
    """The trained model of a run, as its task's predictor (``TokenClassifier``, ``TextClassifier``...).

    ``precision``: ``auto`` (the measured best for the hardware), ``fp32``, ``bf16`` (autocast) or
    ``int8`` (dynamic int8 linear layers, CPU only). ``engine``: ``torch`` or ``onnx`` (ONNX Runtime).
    """
    return load_predictor(run, device, precision, engine)


def predict(run: str | Path, inputs, batch_size: int = 64, precision: str = "auto", engine: str = "torch") -> list[dict]:
    """``load(run).predict(inputs)``: raw texts, pre-split word lists or examples, as the task takes them."""
    return load(run, precision=precision, engine=engine).predict(inputs, batch_size)


def evaluate(
    run: str | Path | Predictor, data: str | Path, format: str = "auto", batch_size: int = 64,
    precision: str = "auto", engine: str = "torch", perturb: str | Sequence[str] | None = None, rate: float = 0.1,
    seed: int = 0, **read_options,
) -> tuple[dict, str]:
    """Score a trained run (or an already loaded predictor) on a labelled file; returns (metrics, report).

    ``read_options`` are the task's file options (``tag_column``, ``scheme`` for NER; ``text_column``,
    ``label_column``... for classifiers); unset ones default to what the model was trained with.
    ``perturb`` (``"typo,case"``, a list, or ``"all"``): also score noisy copies of the file, ``rate`` of
    its words changed, deterministic by ``seed`` (:mod:`tuneforge.data.perturb`); the clean and
    perturbed F1 and the drop per perturbation go to ``metrics["robustness"]``.
    In a run of several processes each scores a share and all return the same metrics.
    """
    predictor = run if isinstance(run, Predictor) else load(run, precision=precision, engine=engine)
    examples = predictor.read(data, format, True, **check_read_options(predictor, read_options))
    started = time.perf_counter()
    metrics, report, _ = evaluate_across_processes(predictor, examples, batch_size)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    metrics["runtime"] = dict(predictor.runtime)
    if perturb:
        task = get_task(predictor.task_name)
        require(task, Perturbable, "--perturb")
        metrics["robustness"] = robustness(predictor, task, examples, perturb, rate, seed, batch_size, clean=metrics)
    return metrics, report


def serve(runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8000, precision: str = "auto",
          device: str | None = None, share: bool = True, engine: str = "torch", **options) -> None:
    """Serve run folders over HTTP until interrupted (``tuneforge serve``); ``runs`` items may be
    ``NAME=RUN``. ``options``: :class:`tuneforge.serving.ServeOptions` fields (``max_batch_size``,
    ``max_wait_ms``, ``max_texts``, ``api_key``...)."""
    from .serving import ServeOptions, create_app, load_models  # deferred: FastAPI and uvicorn load when a server starts
    from .serving import serve as run_server  # deferred: as above

    models = load_models([str(r) for r in runs], device=device, precision=precision, share=share, engine=engine)
    run_server(create_app(models, ServeOptions(**options)), host=host, port=port)

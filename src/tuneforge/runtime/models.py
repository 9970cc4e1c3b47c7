"""Loading tokenizers and models by hub name or local path, the same way for every architecture."""

from __future__ import annotations

import io
import sys
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from ..errors import ConfigError
from ..artifacts.model_folder import require_safetensors
from ..artifacts.paths import resolve_path
from .distributed import print_main

# Byte-level BPE tokenizers refuse pre-split words unless told that each word starts after a
# space (the same list the run_ner example keeps).
_PREFIX_SPACE_TYPES = {"roberta", "gpt2", "bloom", "longformer", "bart", "deberta", "mpnet", "xlm-roberta-xl"}


def _is_hub_name(text: str) -> bool:
    """``name`` or ``namespace/name`` as the hub spells them; anything else can only be a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not text.startswith((".", "~"))


def check_model_source(path: str, gguf_file: str | None = None) -> None:
    """A local model path that cannot be a model is reported as such, not as a bad hub name.
    With ``gguf_file`` the folder holds that GGUF checkpoint instead of config.json."""
    where = Path(path)
    if gguf_file is not None and where.is_dir():
        if not (where / gguf_file).is_file():
            ggufs = sorted(p.name for p in where.glob("*.gguf"))
            raise ConfigError(f"model.gguf_file: {where / gguf_file} does not exist"
                              + (f"; the folder holds {', '.join(ggufs)}" if ggufs else "; the folder holds no .gguf file"))
        return
    if where.is_dir():
        if not (where / "config.json").is_file():
            raise ConfigError(f"model.name_or_path: {path} is a folder without config.json; give a Hugging Face model folder")
    elif where.exists():
        raise ConfigError(f"model.name_or_path: {path} is a file; give the model's folder (the one with config.json)")
    elif not _is_hub_name(path):
        raise ConfigError(f"model.name_or_path: {path} does not exist; check the path to the model folder")


def _require_safetensors_in_folder(path: str) -> None:
    """A local base model's weights are read from safetensors only, as a run's are (serve, predict): a
    folder of ``pytorch_model.bin`` alone is one line, not an unpickling error deep in transformers."""
    if Path(path).is_dir():
        require_safetensors(Path(path), "model.name_or_path")


def _cannot_load(path: str, exc: Exception) -> ConfigError:
    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if Path(path).exists():
        return ConfigError(f"model.name_or_path: cannot load the model in {path} ({why})")
    return ConfigError(
        f"model.name_or_path: {path!r} is not a local folder, and the hub could not give it ({why}); "
        "check the path, or give a hub name reachable from this machine"
    )


def _model_type(path: str, revision: str | None, trust_remote_code: bool) -> str:
    from transformers import AutoConfig

    check_model_source(path)
    try:
        return AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as exc:
        raise _cannot_load(path, exc) from None


# Models that number positions from padding_idx + 1 (RoBERTa's scheme), so their position table
# holds max_position_embeddings - pad_token_id - 1 usable positions (514 - 1 - 1 = 512).
_POSITIONS_AFTER_PADDING = {
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "ibert", "data2vec-text",
    "roberta-prelayernorm", "xmod", "luke", "markuplm", "layoutlmv3", "lilt", "esm",
}


def position_limit(model_config, tokenizer=None) -> int | None:
    """The most tokens one input may have for this model, or None when positions are not bounded."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(model_config, "position_biased_input", True) is False:
        return None  # no absolute position table (DeBERTa-v3's relative positions)
    if getattr(model_config, "model_type", "") in _POSITIONS_AFTER_PADDING:
        pad = getattr(model_config, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "pad_token_id", None) or 1
        limit -= pad + 1
    return limit


def check_max_length(model_config, tokenizer, max_length: int, where: str = "encoding.max_length") -> None:
    """Refuse a window longer than the model's positions: it would crash on the first long input.

    ``where`` names the setting in the message (the config key, or a saved model's tuneforge.json).
    """
    limit = position_limit(model_config, tokenizer)
    if limit is not None and max_length > limit:
        name = getattr(model_config, "_name_or_path", "") or getattr(model_config, "model_type", "the model")
        raise ConfigError(
            f"{where}: {max_length} tokens do not fit the model's {limit} positions ({name}); "
            f"set encoding.max_length to {limit} or less (longer inputs are read in windows)"
        )


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False,
                   gguf_file: str | None = None):
    """The model's fast tokenizer (from a GGUF file's metadata with ``gguf_file``); a pad token is set
    when the model has none."""
    from transformers import AutoTokenizer

    path = resolve_path(name_or_path)
    kwargs: dict = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        check_model_source(path, gguf_file)
        kwargs["gguf_file"] = gguf_file
    elif _model_type(path, revision, trust_remote_code) in _PREFIX_SPACE_TYPES:
        kwargs["add_prefix_space"] = True
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not getattr(tokenizer, "is_fast", True):
        raise ConfigError(
            f"model.name_or_path: {name_or_path!r} has only a slow tokenizer; word alignment needs a fast "
            "(Rust) tokenizer — convert it with tokenizers or pick a model that ships tokenizer.json"
        )
    if tokenizer.pad_token is None:
        # Decoder models (GPT-2, Llama) ship without a pad token; padding positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_token_classifier(
    name_or_path: str,
    labels: list[str] | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    announce_new_head: bool = True,
):
    """An ``AutoModelForTokenClassification``; with ``labels``, a fresh head sized for them.

    ``announce_new_head=False`` when the head is about to be replaced by saved weights anyway.
    """
    from transformers import AutoModelForTokenClassification

    return _load_with_head(
        AutoModelForTokenClassification, name_or_path, labels, revision, trust_remote_code,
        announce_new_head=announce_new_head,
    )


def load_sequence_classifier(
    name_or_path: str,
    labels: list[str] | None = None,
    multi_label: bool = False,
    revision: str | None = None,
    trust_remote_code: bool = False,
    announce_new_head: bool = True,
):
    """An ``AutoModelForSequenceClassification``; with ``labels``, a fresh head sized for them.

    ``problem_type`` is written into the model's config, so plain ``transformers`` (the model's own
    loss, ``pipeline("text-classification")``) applies sigmoid for multi-label and softmax otherwise.
    """
    from transformers import AutoModelForSequenceClassification

    extra = {}
    if labels is not None:
        extra["problem_type"] = "multi_label_classification" if multi_label else "single_label_classification"
    return _load_with_head(
        AutoModelForSequenceClassification, name_or_path, labels, revision, trust_remote_code, extra,
        announce_new_head=announce_new_head,
    )


def load_masked_lm(
    name_or_path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    announce_new_head: bool = True,
):
    """An ``AutoModelForMaskedLM`` (an encoder with its masked-LM head).

    A base saved without the head (sentence-embedding models such as all-MiniLM-L6-v2 ship the bare
    encoder) gets a freshly initialised one, said in one line; a decoder-only model is refused.
    """
    from transformers import AutoModelForMaskedLM

    if is_causal_model(name_or_path, revision, trust_remote_code):
        raise ConfigError(
            f"model.name_or_path: {name_or_path!r} is a decoder-only (causal) model; masked-LM training "
            "and vocabulary extension need an encoder (BERT, RoBERTa, MiniLM...)"
        )
    return _load_with_head(AutoModelForMaskedLM, name_or_path, None, revision, trust_remote_code,
                           announce_new_head=announce_new_head, head_name="masked-LM head")


def _load_with_head(auto_class, name_or_path, labels, revision, trust_remote_code, extra: dict | None = None,
                    announce_new_head: bool = True, head_name: str | None = None):
    path = resolve_path(name_or_path)
    kwargs: dict = {"revision": revision, "trust_remote_code": trust_remote_code, **(extra or {})}
    if labels is not None:
        kwargs.update(
            num_labels=len(labels),
            id2label={i: t for i, t in enumerate(labels)},
            label2id={t: i for i, t in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    # transformers prints a table of every head weight it had to create; for a fresh task head
    # that is expected, so keep the output to one line of our own.
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        check_model_source(path)
        _require_safetensors_in_folder(path)
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    except OSError as exc:
        raise _cannot_load(path, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if labels is not None and announce_new_head and info.get("missing_keys"):
        print_main(f"new task head for {len(labels)} labels: {', '.join(sorted(info['missing_keys']))}")
    elif head_name and announce_new_head and info.get("missing_keys"):
        print_main(f"new {head_name} (the base model has none): {', '.join(sorted(info['missing_keys']))}")
    if getattr(model.config, "pad_token_id", None) is None:
        eos = getattr(model.config, "eos_token_id", None)
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@contextmanager
def _without_gguf_bar(active: bool):
    """transformers dequantises GGUF tensors under a ``tqdm.auto`` bar of its own (``disable_progress_bar``
    does not reach it) that fills a log with 272 redraws: stderr is held while it runs and given back
    without the bar's lines."""
    if not active:
        yield
        return
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().replace("\r", "\n").splitlines()
                if line.strip() and "de-quantizing GGUF tensors" not in line]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")


def load_causal_lm(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False,
                   gguf_file: str | None = None, dtype: str = "float32", attn_implementation: str | None = None):
    """An ``AutoModelForCausalLM`` (GPT-2, Llama, Qwen2, SmolLM2...), from a folder, a hub name or a
    GGUF checkpoint in a folder (``gguf_file``: transformers dequantises it to ``dtype``).

    A model read from GGUF keeps a record of its quantizer (``hf_quantizer``,
    ``config.quantization_config``) although its weights are plain tensors by then; the record is
    dropped so the model trains, saves (``save_pretrained`` refuses it otherwise) and merges as any other.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = resolve_path(name_or_path)
    check_model_source(path, gguf_file)
    if gguf_file is None:
        _require_safetensors_in_folder(path)
    kwargs: dict = {"revision": revision, "trust_remote_code": trust_remote_code, "dtype": getattr(torch, dtype)}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" draws a bar per checkpoint
    try:
        with _without_gguf_bar(gguf_file is not None):
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _cannot_load(path, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if gguf_file is not None:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
    if getattr(model.config, "pad_token_id", None) is None:
        eos = getattr(model.config, "eos_token_id", None)
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def is_causal_model(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    """Decoder-only models (GPT-2, Llama, …): they have a causal-LM head and no masked-LM head."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = _model_type(resolve_path(name_or_path), revision, trust_remote_code)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def quantize_for_inference(model):
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch).

    CPU only: ``torch.ao.quantization.quantize_dynamic`` has no CUDA kernels. Used by
    ``tuneforge.load(..., precision="int8")`` (``predict`` / ``eval --precision int8``); never for
    training. Its speed and agreement with fp32 are measured in benchmarks/RESULTS.md.
    """
    import warnings

    import torch

    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("precision int8 runs on the CPU only; use bf16 on a GPU")
    with warnings.catch_warnings():  # torch deprecates the quantized tensor API in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)

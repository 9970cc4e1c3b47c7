"""Inference side by side: ``tuneforge`` predict against ``pipeline("token-classification",
aggregation_strategy="first")`` on the same model and texts, each at its best batch size.

Agreement is measured per word on the entity type (or O) each side assigns: for the pipeline, the
type of the entity group covering the word's first character; for tuneforge, the type of the
word's tag. With ``decode=argmax`` both read the same first-sub-word argmax and should agree on
every word; with the default Viterbi decoding, tuneforge differs where the argmax sequence is not
valid IOB2 (that is the point of it), and the share is reported too.
"""

from __future__ import annotations

import statistics
import time


def word_types_from_groups(words: list[str], groups: list[dict]) -> list[str]:
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    out = []
    for s in starts:
        label = "O"
        for g in groups:
            if g["start"] <= s < g["end"]:
                label = g["entity_group"]
                break
        out.append(label)
    return out


def tag_types(tags: list[str]) -> list[str]:
    return [t if t == "O" else t[2:] for t in tags]


def time_call(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_inference(run_dir: str, sentences: list[list[str]], batch_sizes=(1, 8, 32, 64), repeats: int = 3,
                    precision: str = "auto", gold: list[list[str]] | None = None) -> dict:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    import tuneforge

    ours = tuneforge.load(run_dir, precision=precision)
    folder = f"{run_dir}/model"
    tagger = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(folder),
                      tokenizer=AutoTokenizer.from_pretrained(folder), aggregation_strategy="first", device="cpu")
    texts = [" ".join(words) for words in sentences]
    n_words = sum(len(w) for w in sentences)
    probe = sentences[: max(64, len(sentences) // 4)]
    probe_texts = texts[: len(probe)]

    def ours_at(bs, items):
        return lambda: ours.predict(items, batch_size=bs)

    def pipe_at(bs, items):
        return lambda: tagger(items, batch_size=bs)

    best_ours = min(batch_sizes, key=lambda bs: time_call(ours_at(bs, probe), 1))
    best_pipe = min(batch_sizes, key=lambda bs: time_call(pipe_at(bs, probe_texts), 1))
    t_ours, t_pipe = [], []
    for _ in range(repeats):  # alternate A B A B
        t_ours.append(time_call(ours_at(best_ours, sentences), 1))
        t_pipe.append(time_call(pipe_at(best_pipe, texts), 1))
    groups = tagger(texts, batch_size=best_pipe)
    pipe_types = [word_types_from_groups(w, g) for w, g in zip(sentences, groups)]
    agreement = {}
    for mode in ("argmax", "viterbi"):
        ours.decode = mode
        preds = ours.predict(sentences, batch_size=best_ours)
        agreement[mode] = share_agreeing([tag_types(p["tags"]) for p in preds], pipe_types)
    variants = _precision_variants(run_dir, sentences, best_ours, repeats, gold)
    return {
        "variants": variants,
        "sentences": len(sentences), "words": n_words,
        "tuneforge_batch_size": best_ours, "pipeline_batch_size": best_pipe,
        "tuneforge_seconds": statistics.median(t_ours), "pipeline_seconds": statistics.median(t_pipe),
        "tuneforge_words_per_second": n_words / statistics.median(t_ours),
        "pipeline_words_per_second": n_words / statistics.median(t_pipe),
        "ratio": statistics.median(t_pipe) / statistics.median(t_ours),
        "agreement_argmax": agreement["argmax"], "agreement_viterbi": agreement["viterbi"],
        "tuneforge_precision": ours.precision, "tuneforge_engine": ours.runtime["engine"],
    }


def share_agreeing(ours: list[list[str]], theirs: list[list[str]]) -> float:
    """The share of words given the same label by both sides."""
    same = sum(a == b for p, q in zip(ours, theirs) for a, b in zip(p, q))
    return same / sum(len(p) for p in ours)


VARIANTS = (("torch", "fp32"), ("torch", "bf16"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"))


def _precision_variants(run_dir: str, sentences, batch_size: int, repeats: int,
                        gold: list[list[str]] | None) -> list[dict]:
    """tuneforge on each engine and precision (default Viterbi decoding): words/s, the share of tags
    equal to torch fp32's (it runs first and is the reference), test F1."""
    import tuneforge
    from tuneforge.evaluation.metrics import entity_scores

    n_words = sum(len(w) for w in sentences)
    out, reference = [], None
    for engine, precision in VARIANTS:
        model = tuneforge.load(run_dir, precision=precision, engine=engine)
        model.predict(sentences[:16], batch_size=batch_size)  # warm-up (oneDNN primitive caches)
        seconds = time_call(lambda: model.predict(sentences, batch_size=batch_size), repeats)
        tags = [p["tags"] for p in model.predict(sentences, batch_size=batch_size)]
        reference = reference or tags
        row = {"engine": engine, "precision": precision, "words_per_second": n_words / seconds,
               "agreement_with_fp32": share_agreeing(tags, reference)}
        if gold is not None:
            row["test_f1"] = entity_scores(gold, tags)["micro"]["f1"]
        out.append(row)
    return out

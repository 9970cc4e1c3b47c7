"""Build a small English chat set from chatterbot-corpus (BSD), offline, as OpenAI ``messages`` JSONL.

    python examples/build_chat_data.py       # -> data/chat-en/{train,dev,test}.jsonl

Each chatterbot conversation (a list of statements, speakers alternating) becomes one conversation:
user, assistant, user, assistant... A conversation with an odd number of statements ends on the user's
turn, which has no answer to learn: that last statement is left out, and the count is printed. The
conversations are shuffled with a fixed seed and cut into train / dev / test.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import yaml

from tuneforge.artifacts.paths import atomic_write_text, resolve_path

CORPUS = "pkg:chatterbot_corpus/data"


def conversations(language: str) -> tuple[list[list[dict]], int]:
    folder = Path(resolve_path(f"{CORPUS}/{language}"))
    out, trimmed = [], 0
    for path in sorted(folder.glob("*.yml")):
        for statements in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            statements = [str(s).strip() for s in statements if str(s).strip()]
            if len(statements) % 2:
                statements, trimmed = statements[:-1], trimmed + 1
            if statements:
                out.append([{"role": "user" if i % 2 == 0 else "assistant", "content": s}
                            for i, s in enumerate(statements)])
    return out, trimmed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", default="english", help="a folder of chatterbot_corpus/data")
    parser.add_argument("--out", default="data/chat-en")
    parser.add_argument("--dev", type=int, default=50, help="conversations held out for dev")
    parser.add_argument("--test", type=int, default=50, help="conversations held out for test")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    chats, trimmed = conversations(args.language)
    random.Random(args.seed).shuffle(chats)
    splits = {"test": chats[: args.test], "dev": chats[args.test: args.test + args.dev],
              "train": chats[args.test + args.dev:]}
    out = Path(args.out)
    for name, part in splits.items():
        atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n"
                                                         for c in part))
    print(f"{len(chats)} conversations from chatterbot-corpus/{args.language} -> {out}/: "
          + ", ".join(f"{name} {len(part)}" for name, part in splits.items())
          + f"; {trimmed} ended on an unanswered statement, left out")


if __name__ == "__main__":
    main()

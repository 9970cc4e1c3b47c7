"""Preference pairs for the SFT -> DPO example, built from the chat set ``build_chat_data.py`` wrote.

    python examples/build_chat_data.py          # -> data/chat-en/{train,dev,test}.jsonl
    python examples/build_preference_data.py    # -> data/chat-en-pairs/{train,dev,test}.jsonl

Each conversation gives one pair: the prompt is every turn before its last answer, ``chosen`` is that
answer, ``rejected`` the last answer of another conversation of the same split, drawn with a fixed seed
(a different text). So the pairs teach a model to prefer the answer that belongs to the conversation
over a fluent but unrelated one: a synthetic preference, not a human judgement of quality, and an easy
one (the reward accuracy it reaches says little about real preference data). The training pairs come
from the conversations the SFT example does *not* train on (it takes the first 600 of train.jsonl).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tuneforge.artifacts.paths import atomic_write_text


def pairs_of(conversations: list[list[dict]], rng: random.Random) -> list[dict]:
    answers = [c[-1]["content"] for c in conversations]
    out = []
    for messages in conversations:
        while True:
            rejected = rng.choice(answers)
            if rejected.strip() != messages[-1]["content"].strip():
                break
        out.append({"prompt": messages[:-1], "chosen": messages[-1]["content"], "rejected": rejected})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", default="data/chat-en")
    parser.add_argument("--out", default="data/chat-en-pairs")
    parser.add_argument("--skip-train", type=int, default=600, help="train conversations the SFT run used")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    counts = {}
    for split in ("train", "dev", "test"):
        lines = Path(args.chats, f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        conversations = [json.loads(line)["messages"] for line in lines if line.strip()]
        if split == "train":
            conversations = conversations[args.skip_train:]
        pairs = pairs_of(conversations, rng)
        atomic_write_text(Path(args.out) / f"{split}.jsonl",
                          "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        counts[split] = len(pairs)
    print(f"preference pairs -> {args.out}/: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()

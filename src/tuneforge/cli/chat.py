"""`tuneforge chat RUN`: talk to a generative run in the terminal, the answer streamed as it is written."""

from __future__ import annotations

import sys

from .. import api
from ..errors import TuneforgeError
from .common import add_precision
from .train import add_generation, configure_generation

HELP = "type a message and press Enter; /reset forgets the conversation, /exit (or Ctrl-D) ends"


def _cmd_chat(args) -> int:
    predictor = api.load(args.run, precision=args.precision, engine=args.engine)
    if not hasattr(predictor, "stream"):
        raise TuneforgeError(f"{args.run}: a {predictor.task_name.replace('_', ' ')} model does not chat; "
                             "give an sft or preference (or causal_lm) run")
    configure_generation(predictor, args)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    start = list(history)
    print(HELP, file=sys.stderr)
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            break
        if text == "/reset":
            history = list(start)
            print("(conversation forgotten)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        if not sys.stdin.isatty():  # piped in: show the turn on stderr, so stdout holds only the answers
            print(f"you> {text}\nmodel> ", end="", file=sys.stderr, flush=True)
        elif sys.stdout.isatty():
            print("model> ", end="", flush=True)
        answer = ""
        for piece in predictor.stream(history):
            answer += piece
            print(piece, end="", flush=True)
        print(flush=True)
        history.append({"role": "assistant", "content": answer})
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("chat", help="chat with an sft run in the terminal (answers stream as they are written)")
    p.add_argument("run")
    p.add_argument("--system", help="a system message that starts the conversation")
    add_precision(p)
    add_generation(p)
    p.set_defaults(func=_cmd_chat)

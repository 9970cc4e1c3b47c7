"""`tuneforge train|eval|predict|chat|compare|curve|continual|export|serve|vocab|data …` — parses arguments and calls the Python API."""

# The docstring above is `tuneforge --help`'s description. Each command group is a module of this package
# with its `_cmd_*` handlers and an `add_parsers(sub)` that adds its sub-parsers; this module builds the
# top-level parser, dispatches, and turns errors into one line and an exit status.

from __future__ import annotations

import argparse
import os
import sys
import time

from ..artifacts.paths import disk_full_error, is_disk_full
from ..errors import TuneforgeError
from ..runtime import distributed
from . import chat, data, deploy, experiments, label, train, vocab


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit 2, like every other error a user can fix."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuneforge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # in this order: it is the order `tuneforge --help` lists the commands in
    train.add_parsers(sub)  # train, eval, predict
    chat.add_parsers(sub)
    experiments.add_parsers(sub)  # compare, continual, continual-split, curve
    deploy.add_parsers(sub)  # export, serve
    vocab.add_parsers(sub)
    data.add_parsers(sub)
    label.add_parsers(sub)
    return parser


def _without_num_processes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            out.append(arg)
    return out


# how long a process other than 0 that failed waits for process 0 to report the error and exit (run)
ERROR_GRACE_SECONDS = 10


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["continual", "split"]:  # `continual split` reads better than a second command name
        argv = ["continual-split", *argv[2:]]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    n = getattr(args, "num_processes", 1)
    if n < 1:
        print("error: --num-processes: give 1 or more", file=sys.stderr)
        return 2
    if n > 1:
        if distributed.launched_distributed():
            print("error: --num-processes starts its own processes; leave it out under torchrun or accelerate launch",
                  file=sys.stderr)
            return 2
        try:
            return distributed.launch_local(n, _without_num_processes(argv))
        except KeyboardInterrupt:
            print(f"interrupted; `tuneforge {args.command} ... --resume` continues a training run from its last checkpoint",
                  file=sys.stderr)
            return 130
    try:
        if distributed.launched_distributed():
            distributed.init_processes()
        with distributed.quiet_unless_main():
            return args.func(args)
    except TuneforgeError as exc:
        if distributed.is_main():
            # one line whatever the message quotes (a file name or value with a line break in it)
            print("error: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        if distributed.is_main():  # a write outside the atomic writers (which say it themselves)
            print("error: " + str(disk_full_error(exc.filename or "a file")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if distributed.is_main():
            rerun = getattr(args, "rerun_resumes", None)  # multi-run commands skip what already finished
            print(f"interrupted; run the same `{rerun}` command again to continue where it stopped" if rerun
                  else "interrupted; `tuneforge train CONFIG --resume` continues from the last checkpoint", file=sys.stderr)
        return 130


def run() -> int:
    """The ``tuneforge`` program: :func:`main`, then out of the process group before the process exits
    (``main`` itself stays in it: a script or notebook may run several commands in the same processes).

    A process of a run of several (a launched worker, or the launcher of ``--num-processes``) ends with
    ``os._exit`` once its output is flushed: at interpreter teardown the threads of torch.distributed
    (gloo, the rendezvous store) could abort the process ("terminate called without an active
    exception", exit code 1) after all its work was done and written."""
    several = distributed.launched_distributed() or any(a.startswith("--num-processes") for a in sys.argv)
    code = main()
    behind_process_0 = not distributed.is_main()
    distributed.leave_processes()
    if several:
        sys.stdout.flush()
        sys.stderr.flush()
        if code and behind_process_0:
            # process 0 meets the same error and prints it (main); the launcher stops this process once
            # process 0 exits. Exiting first instead, this process could get process 0 stopped before
            # it printed: exit status 2 and no message (seen in a fresh-clone CI run on a busy machine)
            time.sleep(ERROR_GRACE_SECONDS)
        os._exit(code if isinstance(code, int) else 1)
    return code

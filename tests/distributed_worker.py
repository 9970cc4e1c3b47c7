"""One process of the 2-process runs in test_distributed.py (started by torchrun; argument: a JSON plan).

Everything the test checks in a multi-process run happens in this one launch, since each start costs
seconds: a recorded training run, an interrupted one (resumed later on one process), every method and
the text task under DDP, an error in process 0 that must not hang the other, sharded eval and predict.
Each process writes what it saw to ``OUT/rank-R.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tuneforge  # noqa: E402
from tuneforge.cli import main  # noqa: E402
from tuneforge.training.callbacks import Callback, StepFunction  # noqa: E402

from callbacks_for_tests import CountItems, EmbeddingNudge, HeadL2  # noqa: E402


class Recorder(Callback):
    """What this process trains on: per step, the example indices of its share, or None when its share
    was empty (on_batch_items is skipped there, but the step runs)."""

    def __init__(self):
        self.steps: list = []
        self.pending = None

    def on_batch_items(self, ctx, items):
        self.pending = [w.example for w in items]
        return items

    def before_forward(self, ctx, batch):
        self.steps.append([ctx.state["epoch"], self.pending])
        self.pending = None


def audit_writes(run_root: str, log: list) -> None:
    """Record every file this process opens for writing, renames or creates under ``run_root``."""
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, os.PathLike)) and str(args[0]).startswith(run_root):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR)):
                log.append(["open", str(args[0])])
        elif event in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree") and str(args[0]).startswith(run_root):
            log.append([event, str(args[1] if event == "os.rename" else args[0])])

    sys.addaudithook(hook)


def run(plan: dict) -> dict:
    from tuneforge.runtime import distributed

    rank = int(os.environ["RANK"])
    seen: dict = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "writes": []}
    audit_writes(plan["runs"], seen["writes"])

    recorder = Recorder()
    # HeadL2: an extra loss term; EmbeddingNudge: a second forward/backward after the first (both under DDP)
    result = tuneforge.train(plan["recorded"], callbacks=[recorder, HeadL2(0.01), EmbeddingNudge(0.1)])
    seen.update(steps=recorder.steps, metrics=result.metrics, processes=distributed.world_size())

    def stop(step):
        if step == plan["stop_at"]:
            raise KeyboardInterrupt

    try:
        tuneforge.train(plan["interrupted"], callbacks=[StepFunction(stop, name="stop"), CountItems()])
    except KeyboardInterrupt:
        seen["interrupted"] = True

    # The FSDP / DeepSpeed paths (engine checkpoints, evaluation in every process, saving from gathered
    # weights) on DDP, where accelerate's save_state / load_state / get_state_dict work the same way
    import tuneforge.training.loop as loop

    real, loop.split_state = loop.split_state, lambda accelerator: (True, True)
    try:
        try:
            tuneforge.train(plan["split"], callbacks=[StepFunction(stop, name="stop")])
        except KeyboardInterrupt:
            seen["split_checkpoint"] = sorted(p.name for p in (Path(plan["split"]["output_dir"]) / "checkpoint").iterdir())
        seen["split"] = tuneforge.train(plan["split"], resume=True).metrics
    finally:
        loop.split_state = real

    seen["methods"] = {}
    for name, config in plan["methods"].items():
        seen["methods"][name] = tuneforge.train(config).metrics["history"]

    # process 0 finds the folder taken: every process must get the error, none may hang at a barrier
    seen["taken_folder_exit"] = main(["train", plan["recorded_file"]])

    seen["eval_exit"] = main(["eval", plan["recorded"]["output_dir"], plan["test_file"], "--out", plan["eval_out"]])
    seen["predict_exit"] = main(["predict", plan["recorded"]["output_dir"], plan["predict_input"],
                                 "--out", plan["predict_out"], "--batch-size", "2"])
    return seen


if __name__ == "__main__":
    plan = json.loads(Path(sys.argv[1]).read_text())
    seen = run(plan)
    Path(plan["root"], "seen", f"rank-{seen['rank']}.json").write_text(json.dumps(seen))

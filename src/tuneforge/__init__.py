"""tuneforge: fine-tune a pre-trained transformer on labelled data into a measured, deployable model.

    import tuneforge
    run = tuneforge.train("examples/wnut16-minilm.yaml")
    model = tuneforge.load(run.run_dir)
    model.predict("Empire State Building is in New York")
"""

import os

# OpenMP workers sleep while they wait for work instead of spinning (libgomp, which the torch CPU
# wheel uses, spins by default, and spinning threads of two jobs on the same cores steal each other's
# time): measured 2.2x faster a job with two jobs on 2 cores, and no slower alone (benchmarks/
# shared_cpu.py, docs/measured.md). A value the user set is kept; it applies when torch is first
# imported, which the next line does for a fresh process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .api import RunResult, TextClassifier, TokenClassifier, evaluate, load, predict, serve, train
from .config import Config, load_config
from .errors import ConfigError, DataError, TuneforgeError
from .version import __version__

__all__ = [
    "Config", "ConfigError", "DataError", "RunResult", "TextClassifier", "TokenClassifier", "TuneforgeError",
    "__version__", "evaluate", "load", "load_config", "predict", "serve", "train",
]

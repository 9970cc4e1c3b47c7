"""tuneforge: fine-tune a pre-trained transformer on labelled data into a measured, deployable model.

    import tuneforge
    run = tuneforge.train("examples/wnut16-minilm.yaml")
    model = tuneforge.load(run.run_dir)
    model.predict("Empire State Building is in New York")
"""

from .api import RunResult, TextClassifier, TokenClassifier, evaluate, load, predict, serve, train
from .config import Config, load_config
from .errors import ConfigError, DataError, TuneforgeError
from .version import __version__

__all__ = [
    "Config", "ConfigError", "DataError", "RunResult", "TextClassifier", "TokenClassifier", "TuneforgeError",
    "__version__", "evaluate", "load", "load_config", "predict", "serve", "train",
]

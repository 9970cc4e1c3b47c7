"""``tuneforge serve``: run folders behind an HTTP API with micro-batching and a web page.

    from tuneforge.serving import ServeOptions, create_app, load_models, serve
    models = load_models(["ner=runs/ner-lora", "runs/sentiment"])
    serve(create_app(models, ServeOptions(max_wait_ms=5)), port=8000)
"""

from .app import ServeOptions, create_app, serve
from .pool import ServedModel, load_models

__all__ = ["ServeOptions", "ServedModel", "create_app", "load_models", "serve"]

"""Serving a trained voice over HTTP: engine (the model), queue, formats, app (FastAPI), page, run."""

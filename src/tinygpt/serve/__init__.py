"""`tinygpt serve`: a model on a local web page and behind an OpenAI-compatible API.

The page (static/, plain HTML, CSS and JavaScript shipped in the package, no build step, no CDN)
chats with the model in its own prompt format, streams the tokens, and for any token clicked shows
the top-k next-token probabilities, its attention over the context (a chosen layer and head, and
the head average) and the logit lens, computed by `tinygpt.viz.attention`. The API answers
GET /v1/models, POST /v1/chat/completions and /v1/completions (streamed as server-sent events or
not) for the official `openai` client, curl and editors; /api/inspect gives the page's
inspection data to a notebook.

Standard library only (http.server), safe by default: see server.py for the limits and engine.py
for the one-at-a-time queue. `import tinygpt` does not import this package."""
from .engine import Engine, Settings, TextOut
from .errors import ServeError
from .server import Server, make_server

__all__ = ["Engine", "Settings", "TextOut", "ServeError", "Server", "make_server"]

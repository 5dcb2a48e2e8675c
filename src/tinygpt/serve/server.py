"""The HTTP side, on the standard library alone: `http.server.ThreadingHTTPServer`, one thread per
connection (at most `max_connections`, beyond that an immediate 503), server-sent events for
streaming. Every read is bounded: a request body by `max_body` bytes (Content-Length required,
more is refused unread, HTTP 413), a stalled client by the socket timeout.

Routes: GET / (the page), /static/app.js, /static/style.css, /v1/models, /api/info, /health;
POST /v1/chat/completions, /v1/completions, /api/generate (the page's stream, with token ids),
/api/inspect (top-k probabilities, attention and logit lens at one position). Nothing in a
request names a file or a model: the page's files are a fixed table read from the package."""
import ipaddress
import json
import select
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from . import api
from .errors import (BodyTooLarge, ForeignHost, LengthRequired, NotFound, RequestError,
                     ServeError, WrongContentType)
from ..errors import TinyGPTError

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close"
        b"\r\n\r\n" + json.dumps({"error": {"message": "too many connections", "type":
                                            "server_error", "param": None,
                                            "code": "server_busy"}}).encode())


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer for one Engine, with a bound on open connections."""
    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address, engine, max_body: int = 1 << 20, max_connections: int = 32,
                 timeout: float = 30.0):
        self.engine, self.max_body, self.client_timeout = engine, max_body, timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.local_only = is_loopback(address[0])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.pages = {path: resources.files(f"{__package__}.static").joinpath(name).read_bytes()
                      for path, (name, _) in STATIC.items()}
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class Handler(BaseHTTPRequestHandler):
    server_version = "tinygpt-serve"
    protocol_version = "HTTP/1.0"  # one request per connection; a stream ends when it closes

    def setup(self):
        self.timeout = self.server.client_timeout  # each read and write on the socket
        super().setup()

    def log_message(self, format, *args):  # quiet: errors are answered, not logged per request
        pass

    # --- routing ------------------------------------------------------------------------
    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _get(self):
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            return self._send(200, self.server.pages[path], STATIC[path][1])
        engine = self.server.engine
        routes = {"/v1/models": lambda: api.models(engine), "/api/info": lambda: api.info(engine),
                  "/health": lambda: {"status": "ok"}}
        if path not in routes:
            raise NotFound(f"no such page: GET {path}")
        self._json(200, routes[path]())

    def _post(self):
        path = self.path.split("?", 1)[0]
        routes = {"/v1/chat/completions": self._chat, "/v1/completions": self._completion,
                  "/api/generate": self._page_generate, "/api/inspect": self._inspect}
        if path not in routes:
            raise NotFound(f"no such endpoint: POST {path}")
        routes[path](self._body())

    def _answer(self, route):
        try:
            self._check_host()
            route()
        except ServeError as err:
            self._error(err)
        except TinyGPTError as err:  # the model refused the input (ids, a non-finite logit ...)
            self._error(RequestError(str(err)))
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the client left: nothing to answer
        except Exception:  # a bug: answered as 500, its traceback on the server's stderr
            traceback.print_exc(file=sys.stderr)
            self._error(ServeError("internal server error (see the server's output)"))

    def _check_host(self):
        if not self.server.local_only:
            return
        host = (self.headers.get("Host") or "").strip()
        name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        if name not in LOCAL_NAMES:
            raise ForeignHost(f"this server answers requests to localhost only, not {host!r}")

    def _body(self) -> dict:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked" \
                or self.headers.get("Content-Length") is None:
            raise LengthRequired("send the request body with a Content-Length")
        if self.headers.get_content_type() != "application/json":
            raise WrongContentType("send the request body as JSON (Content-Type: "
                                   "application/json)")
        try:
            length = int(self.headers["Content-Length"])
        except ValueError:
            raise RequestError("Content-Length must be a number") from None
        if not 0 <= length <= self.server.max_body:
            raise BodyTooLarge(f"the request body ({length} bytes) is larger than this server's "
                               f"limit of {self.server.max_body} bytes")
        try:
            body = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise RequestError(f"the request body is not valid JSON: {err}",
                               code="invalid_json") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object", code="invalid_json")
        return body

    # --- endpoints ----------------------------------------------------------------------
    def _chat(self, body):
        self._openai(*api.parse_chat(body, self.server.engine), chat=True)

    def _completion(self, body):
        self._openai(*api.parse_completion(body, self.server.engine), chat=False)

    def _openai(self, settings, stream, include_usage, chat):
        engine = self.server.engine
        run = api.Run(engine, settings, self._client_gone)
        with engine.turn():
            if not stream:
                return self._json(200, api.complete(run, chat))
            self._start_events()
            for chunk in api.chunks(run, chat, include_usage):
                self._event(chunk)
            self._event("[DONE]")

    def _page_generate(self, body):
        engine = self.server.engine
        run = api.Run(engine, api.parse_page(body, engine), self._client_gone)
        opening = engine.opening_tokens(run.prompt_ids) if run.opening else 0
        with engine.turn():
            self._start_events()
            self._event({"prompt": [[i, engine.piece(i)] for i in run.prompt_ids],
                         "opening": opening})  # the prompt's last tokens that open the reply
            for token, _ in run:
                if token is not None:
                    self._event({"token": [token, engine.piece(token)]})
            self._event({"done": {"finish_reason": run.finish_reason, "usage": run.usage}})

    def _inspect(self, body):
        engine = self.server.engine
        args = api.parse_inspect(body, engine)
        with engine.turn():
            self._json(200, api.inspection(engine, *args))

    # --- writing ------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, content_type: str, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, obj):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, err: ServeError):
        if getattr(self, "_streaming", False):  # headers are out: the error is the next event
            try:
                self._event(err.body())
            except OSError:
                pass
            return
        try:
            self._send(err.status, json.dumps(err.body()).encode(), "application/json",
                       [("Connection", "close")])
        except OSError:
            pass

    def _start_events(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self._streaming = True

    def _event(self, obj):
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """True once the client has closed its side (it sends nothing more after its request,
        so a readable socket with no bytes means it has gone)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


def make_server(engine, host: str = "127.0.0.1", port: int = 8000, **limits) -> Server:
    """A Server for `engine` on host:port (port 0: a free one); `serve_forever()` runs it."""
    return Server((host, port), engine, **limits)

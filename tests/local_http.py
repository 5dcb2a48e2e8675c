"""A test's own HTTP server on 127.0.0.1 (an OS-chosen port), started and stopped by the test:
downloads are tested against it, never against the network."""
import contextlib
import threading
from http.server import ThreadingHTTPServer


@contextlib.contextmanager
def local_server(handler, timeout=5.0, **state):
    """Serve `handler` (a BaseHTTPRequestHandler subclass) in a thread; yields the server with
    `url` set and each of `state` as an attribute the handler reads through `self.server`."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in state.items():
        setattr(srv, name, value)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout)

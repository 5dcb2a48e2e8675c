"""What the server answers when a request cannot be served, in OpenAI's error shape:
{"error": {"message": ..., "type": ..., "param": ..., "code": ...}} with the HTTP status."""
from ..errors import InputError, TinyGPTError


class ServeError(TinyGPTError):
    """A request the server refuses; `status` is its HTTP status."""
    status, kind, default_code = 500, "server_error", None

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code or self.default_code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param,
                          "code": self.code}}


class RequestError(ServeError, InputError):
    """A request whose body or parameters cannot be used (HTTP 400)."""
    status, kind = 400, "invalid_request_error"


class NotFound(ServeError):
    status, kind, default_code = 404, "invalid_request_error", "not_found"


class BodyTooLarge(ServeError):
    status, kind, default_code = 413, "invalid_request_error", "request_too_large"


class LengthRequired(ServeError):
    status, kind, default_code = 411, "invalid_request_error", "length_required"


class WrongContentType(ServeError):
    status, kind, default_code = 415, "invalid_request_error", "unsupported_media_type"


class ForeignHost(ServeError):
    """A Host header naming another machine while the server listens on loopback only (a page
    elsewhere reaching in through DNS rebinding)."""
    status, kind, default_code = 403, "invalid_request_error", "forbidden_host"


class ServerBusy(ServeError):
    """A generation is running and the bounded queue is full (HTTP 503)."""
    status, kind, default_code = 503, "server_error", "server_busy"

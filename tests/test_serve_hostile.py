"""Bad and hostile requests to `tinygpt serve`: each gets its error (OpenAI's JSON shape, the right
HTTP status) or its answer, the server keeps serving, and its memory stays bounded. Also the
one-at-a-time queue (then HTTP 503) and a client that leaves mid-stream stopping its generation."""
import json
import socket
import threading

import pytest

from test_serve_helpers import (TIMEOUT, ServerProcess, assert_openai_error, events, get,
                                in_process_server, make_checkpoint, post, wait_until)

CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "seed": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("serve_hostile") / "tiny")


@pytest.fixture(scope="module")
def server(checkpoint):
    server = ServerProcess(checkpoint, "--max-tokens", "32", "--queue", "2",
                           "--max-body", "65536")
    yield server
    assert server.stop() == 0, server.stderr


def raw_request(url, head: bytes, body: bytes = b"", close_after_send=False) -> bytes:
    """Send bytes as they are; the response's bytes (until the server closes)."""
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: as it should
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def assert_still_serving(url):
    status, body = post(url, CHAT, HELLO)
    assert status == 200 and body["choices"][0]["message"]["role"] == "assistant", body


BAD_BODIES = [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
    ({**HELLO, "temperature": "hot"}, "temperature"),
    ({**HELLO, "temperature": -0.5}, "temperature"),
    ({**HELLO, "temperature": float("nan")}, "temperature"),
    ({**HELLO, "top_p": 0}, "top_p"),
    ({**HELLO, "max_tokens": 1.5}, "max_tokens"),
    ({**HELLO, "max_tokens": True}, "max_tokens"),
    ({**HELLO, "max_tokens": 0}, "max_tokens"),
    ({**HELLO, "max_tokens": 1_000_000}, "max_tokens"),
    ({**HELLO, "seed": -3}, "seed"),
    ({**HELLO, "stop": 5}, "stop"),
    ({**HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**HELLO, "stream": "yes"}, "stream"),
    ({**HELLO, "n": 3}, "n"),
    ({**HELLO, "top_k": [1]}, "top_k"),
]


@pytest.mark.parametrize("body, param", BAD_BODIES, ids=[p for _, p in BAD_BODIES])
def test_a_wrong_field_is_a_400_naming_it(server, body, param):
    status, answer = post(server.url, CHAT, None, raw=json.dumps(body).encode())
    assert_openai_error(status, answer, 400, param)


@pytest.mark.parametrize("raw", [b"{", b"", b"[1, 2]", b"\xff\xfe", b'"text"', b"[" * 60_000])
def test_malformed_json_is_a_400(server, raw):
    status, answer = post(server.url, CHAT, None, raw=raw)
    assert_openai_error(status, answer, 400)


def test_a_completion_needs_a_string_prompt(server):
    for prompt in (None, 7, ["a", "b"], ""):
        assert_openai_error(*post(server.url, "/v1/completions", {"prompt": prompt}), 400, "prompt")


def test_a_prompt_longer_than_the_context_is_refused(server):
    status, answer = post(server.url, "/v1/completions",
                          {"prompt": "word " * 200, "max_tokens": 4})
    assert_openai_error(status, answer, 400, "max_tokens")
    assert answer["error"]["code"] == "context_length_exceeded"


def test_a_huge_body_is_refused_unread(server):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\nContent-Length: 50000000\r\n\r\n")
    response = raw_request(server.url, head, b"x" * 1_000_000)
    assert status_of(response) == 413
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_too_large"


def test_requests_the_server_does_not_take(server):
    assert_openai_error(*get(server.url, "/etc/passwd"), 404)
    assert_openai_error(*get(server.url, "/static/../server.py"), 404)
    assert_openai_error(*post(server.url, "/v1/embeddings", {}), 404)
    status, answer = post(server.url, CHAT, HELLO, headers={"Content-Type": "text/plain"})
    assert_openai_error(status, answer, 415)  # a page elsewhere cannot post without a preflight
    no_length = (b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                 b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n0\r\n\r\n")
    assert status_of(raw_request(server.url, no_length)) == 411
    # DNS rebinding: a name that is not this machine's, though it resolved to 127.0.0.1
    assert_openai_error(*get(server.url, "/v1/models", headers={"Host": "evil.example:80"}), 403)
    assert get(server.url, "/v1/models", headers={"Host": "localhost:1"})[0] == 200


def test_twenty_concurrent_clients_each_get_an_answer_or_a_503(server):
    results = [None] * 20

    def client(i):
        results[i] = post(server.url, CHAT, {**HELLO, "max_tokens": 32, "seed": i})
    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert all(r is not None for r in results)
    for status, body in results:
        if status == 503:
            assert_openai_error(status, body, 503)
            assert body["error"]["code"] == "server_busy"
        else:
            assert status == 200 and body["usage"]["completion_tokens"] >= 1, body
    assert sum(status == 200 for status, _ in results) >= 3  # the running one and the queue
    assert_still_serving(server.url)


def test_memory_stays_bounded_under_hostile_requests(server):
    assert_still_serving(server.url)
    before = server.rss_kb()
    for _ in range(3):
        test_a_huge_body_is_refused_unread(server)
        test_twenty_concurrent_clients_each_get_an_answer_or_a_503(server)
        for raw in (b"{", b"[" * 60_000):
            post(server.url, CHAT, None, raw=raw)
        post(server.url, "/v1/completions", {"prompt": "word " * 200, "max_tokens": 4})
        post(server.url, "/api/inspect", {"ids": list(range(90)), "layer": 1})
    after = server.rss_kb()
    assert after - before < 40_000, f"RSS grew from {before} kB to {after} kB"
    assert_still_serving(server.url)


@pytest.fixture
def slow_server(checkpoint):
    """The server in this process, its model slowed to 30 ms a forward pass and each pass
    counted, so that a test sees a generation run and stop."""
    import time
    with in_process_server(checkpoint, queue_size=1, wait_seconds=30.0) as srv:
        passes = []
        srv.engine.model.register_forward_hook(lambda m, i, o: (passes.append(1), time.sleep(0.03))
                                               and None)
        srv.passes = passes
        yield srv


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_a_client_that_leaves_mid_generation_stops_it(slow_server, stream):
    url, passes = slow_server.url, slow_server.passes
    body = json.dumps({"prompt": "Hello", "max_tokens": 60, "stream": stream}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        received = b""
        while stream and received.count(b"data: ") < 3:
            received += sock.recv(4096)
        assert wait_until(lambda: len(passes) >= 3)  # generating (a whole answer sends nothing)
    # the client is gone: the model is free again long before 60 tokens' worth of time
    assert wait_until(lambda: slow_server.engine._lock.acquire(blocking=False), timeout=10)
    slow_server.engine._lock.release()
    assert len(passes) < 20, f"{len(passes)} forward passes after the client left"
    status, answer = post(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert status == 200 and answer["usage"]["completion_tokens"] >= 1


def test_one_generation_at_a_time_then_a_bounded_queue_then_503(slow_server):
    engine, url = slow_server.engine, slow_server.url
    results = {}

    def waiting():
        results["queued"] = post(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    with engine.turn():  # the model is busy
        queued = threading.Thread(target=waiting)
        queued.start()
        assert wait_until(lambda: engine._admission._value == 0)  # the queue (1) is full now
        status, answer = post(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
        assert_openai_error(status, answer, 503)
        status, answer = post(url, "/api/generate", {"prompt": "Hi", "max_tokens": 2})
        assert_openai_error(status, answer, 503)
        assert "queued" not in results  # still waiting for the model
    queued.join(TIMEOUT)
    assert results["queued"][0] == 200


def test_the_page_stream_reports_errors_and_ends(slow_server):
    status, body = post(slow_server.url, "/api/generate", {"prompt": "", "max_tokens": 2})
    assert_openai_error(status, body, 400, "prompt")
    status, body = post(slow_server.url, "/api/generate",
                        {"prompt": "Hi", "mode": "plain", "max_tokens": 3, "seed": 1})
    sent = events(body)
    assert status == 200 and "prompt" in sent[0] and "done" in sent[-1]
    assert sent[-1]["done"]["usage"]["completion_tokens"] == len([e for e in sent if "token" in e])


def test_a_client_that_leaves_while_queued_costs_no_generation(slow_server):
    engine, url, passes = slow_server.engine, slow_server.url, slow_server.passes
    body = json.dumps({"prompt": "Hello", "max_tokens": 30}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    host, port = url.rsplit("/", 1)[1].rsplit(":", 1)
    with engine.turn():  # the model is busy: the request waits in the queue
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(head + body)
            assert wait_until(lambda: engine._admission._value == 0)  # it is queued
        # ... and its client has gone before the model is free
    assert wait_until(lambda: engine._admission._value == 2)  # it has left the queue
    assert passes == []

"""`tinygpt serve`: the model on a local web page (chat, token probabilities, attention, logit
lens) and behind an OpenAI-compatible API; the server is `tinygpt.serve`."""
import argparse
import signal
import sys

from . import command
from ..argtypes import positive_int
from .inference import weights_args

SERVE_HELP = ("serve a model: a local web page to chat and see inside it (token probabilities, "
              "attention, logit lens) and an OpenAI-compatible API")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a whole number in 0..65535 (0: a free "
                                         f"port), got {text!r}")
    return port


def _interrupt(signum, frame):
    from ..train.signals import Interrupted  # SIGTERM stops the server as Ctrl-C does
    raise Interrupted(signum)


def _page_mode(source: str, text_model) -> str:
    """The page's default: plain continuation for GPT-2's own weights (a base model), the
    model's chat format for everything else (Hugging Face models, tinygpt checkpoints such as chapter
    7's); the page can switch."""
    from ..model import GPTModel
    from ..weights import resolve_model_name
    base = isinstance(text_model.model, GPTModel) and resolve_model_name(source) is not None
    return "plain" if base else "chat"


def host_warning(host: str):
    """The warning printed when `host` is not this machine's loopback address (None if it is)."""
    from ..serve.server import is_loopback
    if is_loopback(host):
        return None
    return (f"tinygpt serve: warning: listening on {host}, so other machines can reach this "
            "server; it has no authentication: anyone who reaches it can use the model")


@command("serve", SERVE_HELP)
def _serve(sub):
    sub.description += (". Binds to 127.0.0.1 unless --host says otherwise; one generation runs "
                        "at a time, others wait in a short queue (then HTTP 503). Ctrl-C stops it.")
    sub.add_argument("--model", required=True,
                     help="a tinygpt checkpoint (or its folder), GPT-2 weights or a GPT-2 size "
                          "name, the chapter-7 instruction model, a Qwen3/Qwen3 MoE/Llama 3/Gemma 3/"
                          "Olmo 3 folder or Hub id")
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only)")
    sub.add_argument("--port", type=_port, default=8000, help="default 8000; 0 picks a free one")
    sub.add_argument("--max-tokens", type=positive_int, default=512,
                     help="the most tokens one request may generate (default 512)")
    sub.add_argument("--queue", type=positive_int, default=4,
                     help="requests that may wait while one generates (default 4; more get 503)")
    sub.add_argument("--max-body", type=positive_int, default=1 << 20,
                     help="the largest request body in bytes (default 1 MiB)")
    weights_args(sub)

    def run(args):
        from ..serve import Engine, make_server
        from .models import load_text_model
        text_model = load_text_model(args.model, chat=True, dtype=args.dtype, quantize=args.quantize)
        name = str(args.model).rstrip("/").split("/")[-1] or str(args.model)
        engine = Engine(text_model, name, max_tokens=args.max_tokens, queue_size=args.queue,
                        page_mode=_page_mode(args.model, text_model))
        server = make_server(engine, args.host, args.port, max_body=args.max_body)
        if host_warning(args.host):
            print(host_warning(args.host), file=sys.stderr, flush=True)
        print(f"tinygpt serve: {text_model.style}, serving {name} at {server.url}/ "
              f"(API: {server.url}/v1); Ctrl-C stops", flush=True)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            print("tinygpt serve: stopping", file=sys.stderr, flush=True)
        finally:
            engine.stopping.set()  # a running generation ends at its next token
            server.server_close()
            signal.signal(signal.SIGTERM, previous)
    return run

"""`tinygpt generate`, `tinygpt chat` and `tinygpt download`: using a model once it is trained."""
import argparse
import sys

from . import command
from ..argtypes import non_negative_float, positive_int

QUIT = ("/exit", "/quit")
NEW = "/new"   # a chat line that starts a fresh conversation


def _sampling_args(sub, max_new_tokens):
    sub.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens)
    sub.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy")
    sub.add_argument("--top-k", type=positive_int)
    sub.add_argument("--seed", type=int, default=123)


def weights_args(sub):
    """--dtype and --quantize: the weights kept as bf16 or as 8-bit blocks (tinygpt.quant)."""
    sub.add_argument("--dtype", type=_choice("float32", "bf16"), default="float32",
                     help="weights in memory: float32 (default) or bf16 (half the bytes)")
    sub.add_argument("--quantize", type=_choice("q8"),
                     help="q8: 8-bit weights in blocks of 32 (about a quarter of float32's bytes)")


def _choice(*names):
    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")
        return text
    return parse


# what a person at a terminal can do, said in --help and the chat banner
AT_A_TERMINAL = ("At a terminal a line can be edited (arrow keys) and earlier ones recalled (up "
                 "arrow); Ctrl-C during a reply stops it and gives the prompt back; Ctrl-C or "
                 "Ctrl-D at the prompt ends. With input piped in, Ctrl-C ends at once.")


@command("generate", "continue a prompt with a trained model")
def _generate(sub):
    sub.description += (". With --interactive each line of standard input is a prompt (blank "
                        "lines are skipped; answers to piped lines are separated by a blank line). "
                        + AT_A_TERMINAL)
    sub.add_argument("--checkpoint", "--model", dest="model", required=True,
                     help="a tinygpt checkpoint (or its folder), GPT-2 weights or a GPT-2 size "
                          "name, a Qwen3/Qwen3 MoE/Llama 3/Gemma 3/Olmo 3 Hugging Face folder or "
                          "Hub name (Qwen/Qwen3-0.6B-Base)")
    sub.add_argument("--prompt", help="the text to continue (or use --interactive)")
    sub.add_argument("--interactive", action="store_true",
                     help="read prompts from standard input, one per line, until end of input")
    _sampling_args(sub, 50)
    weights_args(sub)
    sub.add_argument("--stats", action="store_true",
                     help="after each answer, print the prompt and decode tok/s and the GB/s of "
                          "weight reads to standard error")

    def run(args):
        from ..errors import InputError
        if (args.prompt is None) == (not args.interactive):
            raise InputError("give either --prompt TEXT or --interactive")
        if args.prompt == "":
            raise InputError("--prompt is empty: give the text the model should continue")
        session = Session(args, chat=False)
        if args.prompt is not None:
            session.reply(args.prompt, echo_prompt=True)
            return
        answered, at_terminal = False, sys.stdin.isatty()
        for line in _lines("prompt> "):
            if not line.strip():
                continue
            if answered and not at_terminal:
                print()  # piped: a blank line between answers (a terminal has the prompt)
            answered = True
            _stoppable(lambda: session.reply(line, echo_prompt=True), at_terminal)
    return run


@command("chat", "talk to an instruction-tuned model (its own chat template, or chapter 7's "
                 "Alpaca prompt for GPT-2 checkpoints)")
def _chat(sub):
    sub.description += (". Each reply sees the conversation so far (a Qwen3, Llama 3, Gemma 3 or "
                        "Olmo 3 model; the oldest exchanges are dropped when it outgrows the "
                        "context window); GPT-2 and tinygpt checkpoints answer each message on "
                        f"its own. {NEW} starts a new conversation; {QUIT[0]} or {QUIT[1]} ends. "
                        + AT_A_TERMINAL)
    sub.add_argument("--model", required=True, help="a checkpoint written by finetune-instruct "
                     "(file or its --out folder), any tinygpt checkpoint or GPT-2 weights, or a "
                     "Qwen3/Qwen3 MoE/Llama 3/Gemma 3/Olmo 3 Hugging Face folder or Hub name "
                     "(Qwen/Qwen3-0.6B, google/gemma-3-270m-it, allenai/Olmo-3-7B-Instruct)")
    sub.add_argument("--thinking", action="store_true",
                     help="Qwen3: let the model think (<think>...</think>) before it answers; "
                          "Olmo 3 Think models always think (their template opens <think>)")
    _sampling_args(sub, 256)
    weights_args(sub)

    def run(args):
        session = Session(args, chat=True, thinking=args.thinking)
        at_terminal = sys.stdin.isatty()
        print(chat_banner(args.model, session.text_model, at_terminal), flush=True)
        for line in _lines("you> "):
            if line.strip() in QUIT:
                break
            if line.strip() == NEW:
                session.history.clear()
                print("(a new conversation: the earlier messages are forgotten)", flush=True)
            elif line.strip():
                print("model> ", end="", flush=True)
                _stoppable(lambda: session.chat_reply(line.strip()), at_terminal)
    return run


def chat_banner(name: str, text_model, at_terminal: bool) -> str:
    """What the chat is, how it ends, and for a model too small to follow instructions, what it
    can show instead and how to get one that answers."""
    ends = (f"{NEW} starts a new conversation; {QUIT[0]}, Ctrl-D or Ctrl-C at the prompt ends; "
            "Ctrl-C during a reply stops it." if at_terminal
            else f"{NEW} starts a new conversation; {QUIT[0]} or the end of the input ends.")
    if getattr(text_model, "multi_turn", False):  # (a stand-in may lack it: one message)
        banner = (f"Chatting with {name} in {text_model.style}: each reply sees the "
                  "conversation so far. ")
    else:
        banner = (f"Chatting with {name}: each message is answered on its own (this format has no "
                  f"multi-turn form), in {text_model.style}. ")
    banner += ends
    from ..model import GPT_CONFIG_124M, GPTModel
    model = text_model.model  # narrower than GPT-2 small, the smallest GPT-2: a note
    if isinstance(model, GPTModel) and model.cfg["emb_dim"] < GPT_CONFIG_124M["emb_dim"]:
        banner += (f"\nNote: a small model ({model.num_parameters() / 1e6:.1f}M parameters; GPT-2 "
                   "small has 124M), as the offline chapter-7 and DPO runs make, is far too small "
                   "to follow instructions. It shows the Alpaca format, and its run's plots show "
                   "the training (the loss; for DPO also the reward margins). For a model that "
                   'answers: tinygpt finetune-instruct --weights "gpt2-medium (355M)" --out '
                   "runs/ch07-medium (a long CPU run), then tinygpt chat --model runs/ch07-medium.")
    return banner


def _stoppable(reply, at_terminal: bool) -> None:
    """Run `reply()`. At a terminal Ctrl-C stops that reply, marked "[stopped]", and the caller
    reads the next line; with input piped in, Ctrl-C ends the command as usual."""
    try:
        reply()
    except KeyboardInterrupt:
        if not at_terminal:
            raise
        print(" [stopped]", flush=True)


def alpaca_prompt(instruction: str) -> str:
    """Chapter 7's prompt for one instruction, ending where the model's response begins."""
    from ..data.instruct import format_input
    return format_input({"instruction": instruction, "input": ""}) + "\n\n### Response:\n"


def _lines(prompt: str):
    """Lines from standard input until end of input. Piped input is read as it is, with no
    prompt. At a terminal: the prompt, line editing and history through readline (where Python
    has it), and Ctrl-C at the prompt ends as Ctrl-D does, on a line of its own so that what is
    printed next (the command's footer, the shell's prompt) does not land on the prompt line."""
    if not sys.stdin.isatty():
        while line := sys.stdin.readline():
            yield line.rstrip("\r\n")
        return
    if sys.stdout.isatty():
        try:
            import readline  # noqa: F401  (importing it gives input() editing and history)
        except ImportError:  # a Python built without it: plain input()
            pass
    while True:
        try:
            line = input(prompt)
        except (EOFError, KeyboardInterrupt):
            print(flush=True)
            return
        yield line


class Session:
    """A model, its tokenizer and prompt format (`models.TextModel`) and the sampling settings,
    answering one prompt at a time. In a chat, `history` holds the exchanges so far, (message,
    reply) pairs, and each reply sees them (`chat_reply`)."""

    def __init__(self, args, chat: bool, thinking: bool = False):
        from .. import manual_seed
        from .models import load_text_model
        self.text_model = load_text_model(args.model, chat, thinking, dtype=args.dtype,
                                          quantize=args.quantize)
        self.args, self.history, self.trimmed = args, [], False
        manual_seed(args.seed)

    def reply(self, text: str, echo_prompt: bool = False) -> str:
        """Stream the model's continuation of `text` (in its chat template, in a chat) to stdout
        as it is generated; stop at one of its end tokens. Returns the generated text."""
        ids = self.text_model.prompt_ids(text)
        if echo_prompt:
            print(text, end="", flush=True)
        return self._stream(ids)

    def chat_reply(self, text: str) -> str:
        """`reply` to the message `text` in a chat: the prompt holds the exchanges in `history`
        (a model with a multi-turn format), and the finished exchange joins them. A reply
        stopped by Ctrl-C never returns, so neither it nor its message is kept."""
        if not self.text_model.multi_turn:  # GPT-2's Alpaca prompt: one message at a time
            return self.reply(text)
        reply = self._stream(self._conversation_ids(text))
        self.history.append((text, reply))
        return reply

    def _conversation_ids(self, text: str) -> list:
        """The prompt of `history` and the message `text`, its oldest exchanges dropped while it
        leaves no room for --max-new-tokens in the context window (the message itself is always
        kept); said once on stderr, the first time."""
        tm = self.text_model
        while True:
            messages = [turn for message, reply in self.history
                        for turn in (("user", message), ("assistant", reply))]
            ids = tm.conversation_ids(messages + [("user", text)])
            if not self.history or len(ids) + self.args.max_new_tokens <= tm.context_length:
                return ids
            self.history.pop(0)
            if not self.trimmed:
                self.trimmed = True
                print(f"(the conversation outgrew the context window of {tm.context_length} "
                      f"tokens with room for {self.args.max_new_tokens} new ones: its oldest "
                      "exchanges are dropped from now on)", file=sys.stderr, flush=True)

    def _stream(self, prompt_ids) -> str:
        """Generate after `prompt_ids`, streaming the text to stdout; the reply's text (with the
        model's reply_opening). Each reply starts afresh (generate_stream builds its own KV
        cache), so a reply stopped halfway by Ctrl-C leaves nothing behind for the next."""
        import contextlib
        import numpy as np
        from ..model.generate import generate_stream
        from ..quant import GenerationStats
        tm = self.text_model
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)  # (1, n)
        # the KV cache holds no more than this reply needs (a 40k context would take gigabytes)
        window = min(tm.context_length, ids.shape[1] + self.args.max_new_tokens)
        out = TextStream(tm.tokenizer)
        print(tm.reply_opening, end="", flush=True)   # e.g. Olmo 3 Think's <think>, from the prompt
        tokens = generate_stream(tm.model, ids, self.args.max_new_tokens, window,
                                 temperature=self.args.temperature, top_k=self.args.top_k,
                                 eos_id=tm.stop_ids[0])
        stats = GenerationStats(tm.model, ids.shape[1]) if getattr(self.args, "stats", False) else None
        with contextlib.closing(tokens):  # closed at once when Ctrl-C stops the reply
            for token in tokens:
                if stats:
                    stats.tick()
                if int(token[0, 0]) in tm.stop_ids:  # another end token (<|endoftext|> in a chat)
                    break
                out.add(int(token[0, 0]))  # (1, 1) ids of the new token
        text = tm.reply_opening + out.finish()
        if stats:
            print(stats.line(), file=sys.stderr, flush=True)
        return text


class TextStream:
    """Prints decoded text as token ids arrive. A character split over several byte-level BPE
    tokens decodes to U+FFFD until its last byte is there, so such a tail is held back."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.shown = tokenizer, [], 0

    def add(self, token: int) -> None:
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self._show(text)

    def finish(self) -> str:
        text = self.tokenizer.decode(self.ids)
        self._show(text)
        print(flush=True)
        return text

    def _show(self, text: str) -> None:
        print(text[self.shown:], end="", flush=True)
        self.shown = len(text)


@command("download", "download GPT-2 weights or a Hub model into the cache (one time, needs internet)")
def _download(sub):
    sub.add_argument("name", help='"gpt2-small (124M)", "gpt2-medium (355M)", "gpt2-large (774M)", '
                                  '"gpt2-xl (1558M)" or 124M/355M/774M/1558M, or a Hugging Face '
                                  'repository id such as Qwen/Qwen3-0.6B (HF_TOKEN for gated ones)')
    sub.add_argument("--cache-dir", help="default: $TINYGPT_HOME or ~/.cache/tinygpt")
    sub.add_argument("--force", action="store_true",
                     help="fetch again even if cached (the cached copy is replaced once the new "
                          "one verifies)")

    def run(args):
        from ..weights import download_gpt2, download_model, is_repo_id, resolve_model_name
        if resolve_model_name(args.name) is None and is_repo_id(args.name):
            print(download_model(args.name, cache_dir=args.cache_dir, force=args.force))
        else:
            print(download_gpt2(args.name, cache_dir=args.cache_dir, force=args.force))
    return run

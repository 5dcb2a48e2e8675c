"""`tinygpt chat` and `tinygpt generate` on a Qwen3 model, in a subprocess, as a user runs them: a
tiny random Qwen3 saved in Hugging Face's layout beside a tokenizer.json built here. Its head is
arranged so that greedy decoding of the chat prompt says a few tokens and then `<|im_end|>`. The
replies must be what greedy decoding of the book's chat prompt (the book's `Qwen3Tokenizer`)
gives, stopped at the end token, each shown before the next message is typed; end of input ends
the chat cleanly."""
import subprocess
import sys

import numpy as np
import pytest

from modern_models import TINY_QWEN3
from tinygpt import manual_seed
from tinygpt.model import Qwen3Model, generate
from tinygpt.weights import save_pretrained_hf
from tokenizer_files import write_qwen3_tokenizer_json

MESSAGE = "Tell me a story."
MAX_NEW = 12
book = pytest.importorskip("llms_from_scratch.qwen3")


def greedy(model, ids, n):
    out = generate(model, np.asarray([ids]), n, model.cfg["context_length"])
    return [int(t) for t in out[0, len(ids):]]


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """(folder, the book's chat prompt ids, the reply ids before <|im_end|>)."""
    folder = tmp_path_factory.mktemp("qwen3-chat")
    tokenizer_file = write_qwen3_tokenizer_json(folder / "tokenizer.json")
    theirs = book.Qwen3Tokenizer(tokenizer_file_path=str(tokenizer_file), repo_id="Qwen/Qwen3-0.6B",
                                 apply_chat_template=True, add_generation_prompt=True)
    prompt, im_end = theirs.encode(MESSAGE), theirs.eos_token_id
    manual_seed(3)
    model = Qwen3Model(dict(TINY_QWEN3, vocab_size=320, context_length=64)).eval()
    tokens = greedy(model, prompt, MAX_NEW)
    # swap the head rows of <|im_end|> and the first token that is new at its step (past the
    # first two): greedy decoding then says the tokens before it and then <|im_end|>
    stop = next(k for k in range(2, MAX_NEW) if tokens[k] not in tokens[:k] + [im_end])
    head = model.out_head.weight.data
    head[[tokens[stop], im_end]] = head[[im_end, tokens[stop]]]
    reply = greedy(model, prompt, MAX_NEW)
    assert reply[:stop + 1] == tokens[:stop] + [im_end]
    save_pretrained_hf(model, folder)
    return folder, theirs, tokens[:stop]


def test_chat_applies_the_template_streams_and_stops_at_the_end_token(qwen3_dir):
    folder, theirs, reply = qwen3_dir
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "chat", "--model", str(folder),
                             "--max-new-tokens", str(MAX_NEW)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert "Qwen3's chat template" in banner, banner + proc.stderr.read()
        proc.stdin.write(MESSAGE + "\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # shown while the chat is still open for the next message
        rest, err = proc.communicate(MESSAGE + "\n", timeout=300)  # then end of input
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    expected = "model> " + theirs.decode(reply)
    assert first.rstrip("\n") == expected
    assert [line for line in rest.splitlines() if line.startswith("model> ")] == [expected]


def test_thinking_leaves_the_think_block_to_the_model(qwen3_dir):
    folder, _, _ = qwen3_dir
    theirs = book.Qwen3Tokenizer(tokenizer_file_path=str(folder / "tokenizer.json"),
                                 repo_id="Qwen/Qwen3-0.6B", add_generation_prompt=True,
                                 add_thinking=True)
    from tinygpt.weights import load_pretrained
    tokens = greedy(load_pretrained(folder), theirs.encode(MESSAGE), 3)
    im_end = theirs.eos_token_id
    shown = tokens[:tokens.index(im_end)] if im_end in tokens else tokens
    out = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--model", str(folder),
                          "--thinking", "--max-new-tokens", "3"], input=MESSAGE + "\n",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Qwen3's chat template, thinking on" in out.stdout
    assert [line for line in out.stdout.splitlines() if line.startswith("model> ")] == \
        ["model> " + theirs.decode(shown)]


def test_generate_continues_plain_text_without_the_template(qwen3_dir):
    folder, theirs, _ = qwen3_dir
    from tinygpt.weights import load_pretrained
    model = load_pretrained(folder)
    ids = book.Qwen3Tokenizer(tokenizer_file_path=str(folder / "tokenizer.json"),
                              apply_chat_template=False).encode("Once upon")
    tokens = greedy(model, ids, 6)
    out = subprocess.run([sys.executable, "-m", "tinygpt", "generate", "--model", str(folder),
                          "--prompt", "Once upon", "--max-new-tokens", "6"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    endoftext = theirs.pad_token_id
    shown = tokens[:tokens.index(endoftext)] if endoftext in tokens else tokens
    assert out.stdout.rstrip("\n") == "Once upon" + theirs.decode(shown)


def test_a_folder_without_its_tokenizer_is_refused(qwen3_dir, tmp_path):
    folder, _, _ = qwen3_dir
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    out = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--model", str(tmp_path)],
                         capture_output=True, text=True, input="hi\n", timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no tokenizer file (tokenizer.json)" in out.stderr


def test_llama3_chat_uses_its_chat_format_and_stops_at_eot(tmp_path):
    """The same on a tiny random Llama 3.2 with a tokenizer.model built here, in Meta's place
    (original/tokenizer.model): the prompt is the book's ChatFormat's, the reply stops at
    <|eot_id|>."""
    from modern_models import TINY_LLAMA
    from tinygpt.model import Llama3Model
    from tokenizer_files import write_llama3_tokenizer_model
    llama = pytest.importorskip("llms_from_scratch.llama3")
    (tmp_path / "original").mkdir()
    tok = llama.Llama3Tokenizer(str(write_llama3_tokenizer_model(tmp_path / "original" / "tokenizer.model")))
    prompt, eot = llama.ChatFormat(tok).encode(MESSAGE), tok.special["<|eot_id|>"]
    manual_seed(4)
    model = Llama3Model(dict(TINY_LLAMA, vocab_size=128_256, context_length=96)).eval()
    tokens = greedy(model, prompt, 6)
    stop = next(k for k in range(1, 6) if tokens[k] not in tokens[:k] + [eot])
    head = model.out_head.weight.data
    head[[tokens[stop], eot]] = head[[eot, tokens[stop]]]
    assert greedy(model, prompt, 6)[:stop + 1] == tokens[:stop] + [eot]
    save_pretrained_hf(model, tmp_path)
    out = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--model", str(tmp_path),
                          "--max-new-tokens", "6"], input=MESSAGE + "\n", capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Llama 3's chat format" in out.stdout
    replies = [line for line in out.stdout.splitlines() if line.startswith("model> ")]
    assert replies == ["model> " + tok.decode(tokens[:stop])]

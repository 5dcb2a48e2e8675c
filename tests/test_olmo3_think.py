"""Olmo 3's Think models in `tinygpt chat`/`generate`/`serve`, told from Instruct by the folder's
chat template (tokenizer_config.json's "chat_template" or chat_template.jinja), never its name.

A tiny random transformers Olmo3 model and a tokenizer.json built for it (test_chat_families.py's
helpers), plus a chat template written here in the shape of the released ones: a Think template
(its generation prompt `<|im_start|>assistant\\n<think>`, its own default system turn) gives the
prompt ids that template renders to (rendered with jinja2, as transformers does, when jinja2 is
installed) and transformers' greedy reply from them; an Instruct template gives exactly today's
prompt; a folder with no template, or one of neither form, keeps the Instruct prompt and the
style note says why."""
import shutil
import subprocess
import sys

import pytest

from test_chat_families import (FAMILIES, MAX_NEW, MESSAGE, OLMO3_SYSTEM, PLAIN, hf_greedy,
                                write_olmo3_tokenizer_json)

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

# the default system prompts of Olmo-3.1-32B-Think (and 7B-Think as ollama renders it) and of
# Olmo-3-32B-Think: the literal strings the format needs
SYSTEM_31 = ("You are Olmo, a helpful AI assistant built by Ai2. Your date cutoff is December "
             "2024, and your model weights are available at https://huggingface.co/allenai.")
SYSTEM_32B = "You are a helpful AI assistant."
NO_FUNCTIONS = " You do not currently have access to any functions. <functions></functions>"
INSTRUCT_PROMPT = "<|im_start|>assistant\\n"
THINK_PROMPT = "<|im_start|>assistant\\n<think>"


def olmo3_template(default_system: str, generation: str, in_loop: bool) -> str:
    """A chat template in the released templates' shape (written here): a default system turn
    when the messages hold none, then system / user / assistant turns (an earlier assistant turn
    kept whole), the last one closed by eos_token, and `generation` printed after the test of
    add_generation_prompt (inside the loop at its last message, or after the loop)."""
    gen = "{%- if add_generation_prompt -%}{{ '" + generation + "' }}{%- endif -%}"
    return ("{%- set has_system = messages | selectattr('role', 'equalto', 'system') | list "
            "| length > 0 -%}{%- if not has_system -%}{{ '<|im_start|>system\\n" + default_system
            + "<|im_end|>\\n' }}{%- endif -%}{%- for m in messages -%}"
            "{%- if m['role'] == 'system' -%}{{ '<|im_start|>system\\n' + m['content'] + '"
            + NO_FUNCTIONS + "<|im_end|>\\n' }}"
            "{%- elif m['role'] == 'user' -%}{{ '<|im_start|>user\\n' + m['content'] + "
            "'<|im_end|>\\n' }}"
            "{%- elif m['role'] == 'assistant' -%}{{ '<|im_start|>assistant\\n' + m['content'] }}"
            "{{ '<|im_end|>\\n' if not loop.last else eos_token }}{%- endif -%}"
            + ("{%- if loop.last -%}" + gen + "{%- endif -%}{%- endfor -%}" if in_loop
               else "{%- endfor -%}" + gen))


def put_template(folder, template: str, as_jinja: bool):
    """The template as chat_template.jinja (its "\\n" escapes as real line breaks inside the
    literals, as some releases write it) or as tokenizer_config.json's "chat_template"."""
    import json
    if as_jinja:
        (folder / "chat_template.jinja").write_text(template.replace("\\n", "\n"), encoding="utf-8")
    else:
        (folder / "tokenizer_config.json").write_text(json.dumps(
            {"eos_token": "<|endoftext|>", "chat_template": template}), encoding="utf-8")


def render(template: str, messages) -> str:
    """`template` rendered as transformers renders a chat template (jinja2's sandbox, trim_blocks
    and lstrip_blocks); the test is skipped when jinja2 is not installed."""
    pytest.importorskip("jinja2", reason="jinja2 (a transformers dependency) is not "
                                 "installed, so the chat template cannot be rendered")
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder with tokenizer.json and a tiny Olmo3ForCausalLM, its `tokenizers` Tokenizer, the
    transformers model)."""
    folder = tmp_path_factory.mktemp("olmo3-tiny")
    hf = tokenizers.Tokenizer.from_file(str(write_olmo3_tokenizer_json(folder / "tokenizer.json")))
    import transformers
    config = transformers.Olmo3Config(   # test_chat_families' tiny Olmo 3, with room for a long
        vocab_size=hf.get_vocab_size(with_added_tokens=True), hidden_size=32,   # system prompt
        intermediate_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, sliding_window=4, pad_token_id=0, bos_token_id=None,
        eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.Olmo3ForCausalLM(config).eval()
    model.save_pretrained(folder)
    return folder, hf, model


def with_template(tiny, tmp_path, template, as_jinja=False):
    folder = shutil.copytree(tiny[0], tmp_path / "model")
    if template is not None:
        put_template(folder, template, as_jinja)
    return folder


def ids_of(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


# (default system, generation prompt inside the loop, as chat_template.jinja)
THINK_CASES = pytest.mark.parametrize("system, in_loop, as_jinja", [
    (SYSTEM_31, True, False), (SYSTEM_32B, False, True)],
    ids=["3.1-32B-Think in tokenizer_config", "32B-Think in chat_template.jinja"])


@THINK_CASES
def test_a_think_template_opens_the_reply_in_think(tiny, tmp_path, system, in_loop, as_jinja):
    from tinygpt.cli.models import load_text_model
    folder = with_template(tiny, tmp_path, olmo3_template(system, THINK_PROMPT, in_loop), as_jinja)
    hf = tiny[1]
    spelled = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{MESSAGE}<|im_end|>\n"
               "<|im_start|>assistant\n<think>")
    text_model = load_text_model(folder, chat=True)
    assert text_model.prompt_ids(MESSAGE) == ids_of(hf, spelled)
    assert text_model.tokenizer.decode(text_model.prompt_ids(MESSAGE)) == spelled
    assert text_model.style.startswith("Olmo 3 Think's chat template")
    assert "Instruct" not in text_model.style
    plain = load_text_model(folder, chat=False)   # generate: plain text, whatever the template
    assert plain.prompt_ids(PLAIN) == ids_of(hf, PLAIN)


@THINK_CASES
def test_the_think_prompt_is_what_the_template_renders(tiny, tmp_path, system, in_loop, as_jinja):
    from tinygpt.cli.models import load_text_model
    template = olmo3_template(system, THINK_PROMPT, in_loop)
    folder = with_template(tiny, tmp_path, template, as_jinja)
    rendered = render(template, [{"role": "user", "content": MESSAGE}])
    assert rendered.endswith("<|im_start|>assistant\n<think>")
    assert load_text_model(folder, chat=True).prompt_ids(MESSAGE) == ids_of(tiny[1], rendered)


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_a_conversation_is_what_the_template_renders(tiny, tmp_path, system):
    """A next turn holds the earlier reply whole, its <think> block included, and tinygpt's
    conversation prompt (tinygpt chat's history, the API's messages) is what the template renders."""
    from tinygpt.cli.models import load_text_model
    reply = "<think>Short.</think>Hello."
    messages = ([("system", system)] if system else []) + [
        ("user", MESSAGE), ("assistant", reply), ("user", "Again.")]
    template = olmo3_template(SYSTEM_31, THINK_PROMPT, True)
    rendered = render(template, [{"role": r, "content": c} for r, c in messages])
    assert f"<|im_start|>assistant\n{reply}<|im_end|>\n<|im_start|>user\nAgain." in rendered
    text_model = load_text_model(with_template(tiny, tmp_path, template), chat=True)
    assert text_model.conversation_ids(messages) == ids_of(tiny[1], rendered)


def test_a_think_model_chats_with_transformers_greedy_reply(tiny, tmp_path):
    """`tinygpt chat` as a user runs it and the server's engine: the reply is transformers' greedy
    generate from the Think prompt, shown whole after the banner that names the Think template."""
    from tinygpt.cli.models import load_text_model
    from tinygpt.serve import Engine, Settings
    folder = with_template(tiny, tmp_path, olmo3_template(SYSTEM_31, THINK_PROMPT, True))
    _, hf, model = tiny
    prompt = ids_of(hf, f"<|im_start|>system\n{SYSTEM_31}<|im_end|>\n<|im_start|>user\n{MESSAGE}"
                        "<|im_end|>\n<|im_start|>assistant\n<think>")
    reply, _ = hf_greedy(model, prompt, [hf.token_to_id(t) for t in FAMILIES["olmo3"][4]])
    engine = Engine(load_text_model(folder, chat=True), "think")
    with engine.turn():
        got = list(engine.tokens(engine.prompt_ids(MESSAGE, True), Settings(
            prompt=MESSAGE, chat=True, max_tokens=MAX_NEW, temperature=0.0)))
    assert got == reply
    out = subprocess.run([sys.executable, "-m", "tinygpt", "chat", "--model", str(folder),
                          "--max-new-tokens", str(MAX_NEW)], input=f"{MESSAGE}\n/exit\n",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    banner, _, shown = out.stdout.partition("\nmodel> ")
    assert "Olmo 3 Think's chat template (the reply opens in <think>" in banner
    # the reply opens inside the prompt's <think>: the chat shows it before the streamed reasoning
    assert shown == "<think>" + hf.decode(reply, skip_special_tokens=False) + "\n"


def test_an_instruct_template_gives_todays_prompt(tiny, tmp_path):
    from tinygpt.cli.models import load_text_model
    template = olmo3_template(OLMO3_SYSTEM, INSTRUCT_PROMPT, True)
    folder = with_template(tiny, tmp_path, template)
    text_model = load_text_model(folder, chat=True)
    want = ids_of(tiny[1], FAMILIES["olmo3"][2])   # the Instruct prompt test_chat_families checks
    assert text_model.prompt_ids(MESSAGE) == want
    assert text_model.style == "Olmo 3's chat template"
    assert ids_of(tiny[1], render(template, [{"role": "user", "content": MESSAGE}])) == want


UNKNOWN = {"no template": (None, "no chat template found in the folder"),
           "another generation prompt": (olmo3_template(SYSTEM_31, "<|im_start|>assistant\\n<r>",
                                                        True), "neither Olmo 3 form"),
           "a think prompt, no default system literal": (
               olmo3_template(SYSTEM_31, THINK_PROMPT, True).replace("not has_system", "not x"),
               "neither Olmo 3 form")}


@pytest.mark.parametrize("case", list(UNKNOWN))
def test_an_unknown_template_keeps_the_instruct_prompt_and_says_so(tiny, tmp_path, case):
    from tinygpt.cli.models import load_text_model
    template, note = UNKNOWN[case]
    text_model = load_text_model(with_template(tiny, tmp_path, template), chat=True)
    assert text_model.prompt_ids(MESSAGE) == ids_of(tiny[1], FAMILIES["olmo3"][2])
    assert text_model.style.startswith("Olmo 3's chat template (Instruct form: ")
    assert note in text_model.style


def test_where_the_template_is_read_from(tmp_path):
    """chat_template.jinja before tokenizer_config.json (as transformers reads them); a list of
    named templates gives its "default"; a tokenizer_config.json that is no JSON object, or a
    chat_template.jinja that is no UTF-8 text, is refused naming the file."""
    import json
    from tinygpt.errors import InputError
    from tinygpt.tokenizer.olmo3 import olmo3_chat_form, read_chat_template
    think, instruct = (olmo3_template(SYSTEM_32B, THINK_PROMPT, False),
                       olmo3_template(OLMO3_SYSTEM, INSTRUCT_PROMPT, False))
    put_template(tmp_path, instruct, as_jinja=False)
    assert read_chat_template(tmp_path) == instruct and not olmo3_chat_form(tmp_path).think
    put_template(tmp_path, think, as_jinja=True)
    assert olmo3_chat_form(tmp_path) == (True, SYSTEM_32B, "")
    (tmp_path / "chat_template.jinja").unlink()
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "tool_use", "template": instruct},
                                                    {"name": "default", "template": think}]}))
    assert read_chat_template(tmp_path) == think
    for broken in ("{not json", "[1, 2]"):
        config.write_text(broken)
        with pytest.raises(InputError, match="tokenizer_config.json is not a tokenizer config"):
            olmo3_chat_form(tmp_path)
    (tmp_path / "chat_template.jinja").write_bytes(b"{{ '\xff' }}")
    with pytest.raises(InputError, match="chat_template.jinja is not a chat template"):
        olmo3_chat_form(tmp_path)

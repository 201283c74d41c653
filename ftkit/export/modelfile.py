"""The Ollama ``Modelfile`` of a GGUF export: FROM the GGUF file, a TEMPLATE derived from the model's chat
template, its default SYSTEM prompt, stop tokens and parameters.

Ollama templates are Go templates, not Jinja, so the chat template is not translated: it is rendered with marker
messages to find, for each role, the text before and after a message's content, and the generation prompt. The
TEMPLATE concatenates those pieces per message; a chat template that is not of that shape (one whose output for a
message depends on more than its role and content) is refused. Before the Modelfile is written, the TEMPLATE read
back from its text must render a multi-turn conversation exactly as the chat template does.
"""

from __future__ import annotations

import re

from ftkit.export.errors import ExportError

_MARK = "\x00FTKIT-{}\x00"
_ROLES = ("system", "user", "assistant")
# Ollama reserves KV-cache memory for the whole num_ctx: a longer context is the user's choice, not the default's
MAX_NUM_CTX = 8192
_CHECK_CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Is 4 even?"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Is 7 even?"},
]
_INSTRUCTIONS = ("FROM", "ADAPTER", "TEMPLATE", "SYSTEM", "PARAMETER", "MESSAGE", "LICENSE", "REQUIRES")


class _Shape(dict):
    """role -> (text before the content, text after it), plus the generation prompt and the default system."""


def _render(tokenizer, messages, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _split(text: str, mark: str, what: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise ExportError(f"the chat template cannot be written as an Ollama TEMPLATE: {what} is not rendered once")
    before, after = text.split(mark)
    return before, after


def chat_shape(tokenizer) -> _Shape:
    """The per-role pieces of the tokenizer's chat template (see the module docstring)."""
    if not tokenizer.chat_template:
        raise ExportError("the tokenizer has no chat template: an Ollama Modelfile needs one to build its TEMPLATE")
    shape = _Shape()
    anchor = [{"role": "system", "content": "S"}]
    base = _render(tokenizer, anchor)
    shape["system"] = _split(
        _render(tokenizer, [{"role": "system", "content": _MARK.format("system")}]),
        _MARK.format("system"),
        "a system message",
    )
    for role in ("user", "assistant"):
        text = _render(tokenizer, [*anchor, {"role": role, "content": _MARK.format(role)}])
        if not text.startswith(base):
            raise ExportError(
                "the chat template cannot be written as an Ollama TEMPLATE: "
                f"a {role} message changes what comes before it"
            )
        shape[role] = _split(text[len(base) :], _MARK.format(role), f"a {role} message")
    user = [*anchor, {"role": "user", "content": "U"}]
    shape["generation"] = _render(tokenizer, user, True)[len(_render(tokenizer, user)) :]
    # a template that adds a system prompt when none is given: Ollama's SYSTEM does the same
    alone = _render(tokenizer, [{"role": "user", "content": "U"}])
    head = alone[: len(alone) - len("U".join(shape["user"]))]
    prefix, suffix = shape["system"]
    if head and not (head.startswith(prefix) and head.endswith(suffix)):
        raise ExportError(
            "the chat template cannot be written as an Ollama TEMPLATE: it starts with text outside any message"
        )
    shape["default_system"] = head[len(prefix) : len(head) - len(suffix)] if head else None
    return shape


def _go_literal(text: str) -> str:
    if '"""' in text:
        raise ExportError('the chat template cannot be written as an Ollama TEMPLATE: it contains """')
    return text.replace("{{", '{{ "{{" }}')


def go_template(shape: _Shape) -> str:
    """The Ollama (Go) TEMPLATE: each message as its role's pieces around its content, then the generation prompt.

    No ``{{-`` trim markers: they would eat the newlines the pieces end with."""
    branches = []
    for i, role in enumerate(_ROLES):
        before, after = (_go_literal(t) for t in shape[role])
        branches.append(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}')
    return "{{ range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}" + _go_literal(shape["generation"])


_BRANCH = re.compile(
    r'\{\{ (?:if|else if) eq \.Role "(\w+)" \}\}(.*?)\{\{ \.Content \}\}(.*?)(?=\{\{ else if|\{\{ end \}\})', re.S
)


def render_go_template(template: str, messages: list[dict]) -> str:
    """What Ollama renders from a TEMPLATE written by :func:`go_template` (read back from its text)."""
    unescape = lambda t: t.replace('{{ "{{" }}', "{{")  # noqa: E731
    pieces = {role: (unescape(a), unescape(b)) for role, a, b in _BRANCH.findall(template)}
    generation = unescape(template.rsplit("{{ end }}{{ end }}", 1)[-1])
    return "".join(pieces[m["role"]][0] + m["content"] + pieces[m["role"]][1] for m in messages) + generation


def _stops(tokenizer, shape: _Shape) -> list[str]:
    stops = [tokenizer.eos_token, shape["assistant"][1].strip()]
    special = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()}
    return list(dict.fromkeys(s for s in stops if s and s in special))


def modelfile_text(tokenizer, gguf_name: str, context_length: int | None) -> str:
    """The Modelfile for the GGUF file ``gguf_name`` beside it; checked to render like the chat template."""
    shape = chat_shape(tokenizer)
    template = go_template(shape)
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""']
    if shape["default_system"]:
        lines += ["", f'SYSTEM """{_go_literal(shape["default_system"])}"""']
    lines.append("")
    lines += [f'PARAMETER stop "{s}"' for s in _stops(tokenizer, shape)]
    if context_length:
        lines.append(f"PARAMETER num_ctx {min(context_length, MAX_NUM_CTX)}")
    text = "\n".join(lines) + "\n"
    check_modelfile(text, tokenizer)
    return text


def read_modelfile(text: str) -> list[tuple[str, str]]:
    """The (INSTRUCTION, argument) pairs of a Modelfile, as Ollama's parser reads them (quotes and triple quotes
    removed); raises :class:`ExportError` on an unknown instruction or an unclosed quote."""
    out, pos = [], 0
    pattern = re.compile(r'\s*(?:#[^\n]*|(\w+)[ \t]+("""(.*?)"""|"((?:[^"\\\n]|\\.)*)"|([^\n]*)))', re.S)
    while pos < len(text):
        m = pattern.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise ExportError(
                    f"Modelfile: cannot read {text[pos : pos + 40]!r} (unclosed quote or missing argument)"
                )
            break
        pos = m.end()
        if m.group(1) is None:
            continue
        name = m.group(1).upper()
        if name not in _INSTRUCTIONS:
            raise ExportError(f"Modelfile: unknown instruction {m.group(1)!r} (allowed: {', '.join(_INSTRUCTIONS)})")
        value = next(g for g in (m.group(3), m.group(4), m.group(5)) if g is not None)
        out.append((name, value.strip() if m.group(5) is not None else value))
    return out


def check_modelfile(text: str, tokenizer) -> None:
    """The Modelfile must read back with one FROM and a TEMPLATE (plus SYSTEM) that renders a conversation like
    the chat template does."""
    entries = read_modelfile(text)
    found = {k: v for k, v in entries}
    if [k for k, _ in entries].count("FROM") != 1 or "TEMPLATE" not in found:
        raise ExportError("Modelfile: needs exactly one FROM and a TEMPLATE")
    expected = _render(tokenizer, _CHECK_CONVERSATION, True)
    got = render_go_template(found["TEMPLATE"], _CHECK_CONVERSATION)
    alone = [_CHECK_CONVERSATION[1]]
    system = [{"role": "system", "content": found["SYSTEM"]}] if "SYSTEM" in found else []
    if got != expected or render_go_template(found["TEMPLATE"], system + alone) != _render(tokenizer, alone, True):
        raise ExportError(
            "Modelfile: its TEMPLATE does not render a conversation as the chat template does; "
            "the chat template cannot be written as an Ollama TEMPLATE"
        )

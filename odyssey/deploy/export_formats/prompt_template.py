"""The candidate's evaluated prompt as a chat template (Jinja, for the HF folder and the GGUF file) and
as an Ollama TEMPLATE (Go): a user who sends the raw input as the user message gets, token for token,
the prompt the harness rendered for that input.

The harness's own rendering (``odyssey.prompts.render_text``: instruction, labels, fixed in-context
examples, the model's chat template) is run once with marker strings in place of the input and of the
system text, and cut at the markers. What is around them is literal text, so both templates are a few
lines whatever the base model's template does, and the export checks them on real examples of the
project before writing anything.

Task mode follows ``odyssey serve``'s task mode: the last user message alone is the input (the candidate
was evaluated single-turn); system messages, joined by newlines, replace the candidate's system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from odyssey.data import Example
from odyssey.errors import OdysseyError

INPUT_MARK = "@@odyssey-input-5e1f@@"
SYSTEM_MARK = "@@odyssey-system-5e1f@@"


@dataclass
class TaskTemplate:
    """The evaluated prompt around the input: ``prefix + input + suffix`` (the candidate's own system
    prompt, if any, is inside ``prefix``); with a caller's system text: ``system_prefix + system +
    system_infix + input + suffix``."""

    prefix: str
    system_prefix: str | None  # None: the model's chat template takes no system message; it is ignored
    system_infix: str
    suffix: str

    def render(self, user: str, system: str | None = None) -> str:
        if system is None or self.system_prefix is None:
            return self.prefix + user + self.suffix
        return self.system_prefix + system + self.system_infix + user + self.suffix

    def to_jinja(self, note: str) -> str:
        """A Jinja chat template (transformers' sandbox and llama.cpp's engine both run it)."""
        lit = _jinja_literal
        with_system = (
            ""
            if self.system_prefix is None
            else (
                f"{{%- else -%}}{{{{ {lit(self.system_prefix)} }}}}{{{{ ns.system }}}}{{{{ {lit(self.system_infix)} }}}}\n"
            )
        )
        return (
            "{#- " + note.replace("#}", "# }") + " -#}\n"
            "{%- set ns = namespace(system=none, user='') -%}\n"
            "{%- for message in messages -%}\n"
            "{%- if message['role'] == 'system' or message['role'] == 'developer' -%}\n"
            "{%- if ns.system is none -%}{%- set ns.system = message['content'] -%}\n"
            "{%- else -%}{%- set ns.system = ns.system + '\\n' + message['content'] -%}{%- endif -%}\n"
            "{%- elif message['role'] == 'user' -%}{%- set ns.user = message['content'] -%}\n"
            "{%- endif -%}\n"
            "{%- endfor -%}\n"
            f"{{%- if ns.system is none -%}}{{{{ {lit(self.prefix)} }}}}\n"
            f"{with_system}"
            "{%- endif -%}\n"
            f"{{{{- ns.user -}}}}{{{{ {lit(self.suffix)} }}}}"
        )

    def to_go(self) -> str:
        """An Ollama TEMPLATE: ``.System`` (the Modelfile's SYSTEM or the request's) and ``.Prompt``."""
        for part in (self.prefix, self.system_prefix or "", self.system_infix, self.suffix):
            if "{{" in part or '"""' in part:
                raise OdysseyError(
                    "the candidate's prompt contains '{{' or '\"\"\"', which an Ollama Modelfile "
                    "TEMPLATE cannot hold literally",
                    hint="export --format gguf and write the Modelfile yourself",
                )
        if self.system_prefix is None:
            return f"{self.prefix}{{{{ .Prompt }}}}{self.suffix}"
        return (
            f"{{{{ if .System }}}}{self.system_prefix}{{{{ .System }}}}{self.system_infix}"
            f"{{{{ else }}}}{self.prefix}{{{{ end }}}}{{{{ .Prompt }}}}{self.suffix}"
        )


_JINJA_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _jinja_literal(text: str) -> str:
    """A single-quoted Jinja string literal, with only the escapes both Jinja2 and llama.cpp's engine
    read (\\\\ \\' \\n \\t \\r); other control characters have no portable spelling."""
    bad = sorted({hex(ord(c)) for c in text if ord(c) < 32 and c not in "\n\t\r"})
    if bad:
        raise OdysseyError(
            f"the candidate's prompt holds control characters ({', '.join(bad)}) that a chat "
            "template cannot spell portably",
            hint="remove them from prompt.instruction/system",
        )
    return "'" + "".join(_JINJA_ESCAPES.get(c, c) for c in text) + "'"


def _cut(text: str, mark: str, what: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise OdysseyError(
            f"the model's chat template does not pass the {what} through unchanged, so the "
            "evaluated prompt cannot be rebuilt around a user's message",
            hint="export with --prompt-mode chat (the model's own chat template)",
        )
    before, after = text.split(mark)
    return before, after


def task_template(tokenizer, cfg, demos: list[Example]) -> TaskTemplate:
    """Cut the harness's rendering of ``cfg`` (with these fixed demos) at the input and system markers."""
    from odyssey.prompts import PromptConfig, has_chat_template, render_text

    marked = Example("odyssey-export", INPUT_MARK)
    prefix, suffix = _cut(render_text(tokenizer, cfg, marked, demos), INPUT_MARK, "input")
    with_system = PromptConfig.from_dict({**cfg.as_dict(), "system": SYSTEM_MARK})
    try:
        system_text = render_text(tokenizer, with_system, marked, demos)
    except Exception as exc:  # jinja2.TemplateError: "System role not supported" (Gemma) and the like
        if cfg.system:
            raise OdysseyError(
                f"the model's chat template refuses a system message: {exc}",
                hint="remove prompt.system, or export with --prompt-mode chat",
            ) from None
        system_text = None
    if system_text is None:
        system_prefix, system_infix, system_suffix = None, "", suffix
    else:
        system_prefix, rest = _cut(system_text, SYSTEM_MARK, "system prompt")
        system_infix, system_suffix = _cut(rest, INPUT_MARK, "input")
    if system_suffix != suffix:
        raise OdysseyError(
            "the model's chat template ends the prompt differently with a system message",
            hint="export with --prompt-mode chat (the model's own chat template)",
        )
    if not has_chat_template(tokenizer):
        # The harness tokenizes template-less prompts with the tokenizer's special tokens (BOS); a chat
        # template is applied without them, so the BOS becomes part of the template's text.
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x", add_special_tokens=True)["input_ids"]
        if tokenizer.bos_token and full[:1] == [tokenizer.bos_token_id] and full[1:] == plain:
            prefix = tokenizer.bos_token + prefix
            system_prefix = None if system_prefix is None else tokenizer.bos_token + system_prefix
    return TaskTemplate(prefix, system_prefix, system_infix, suffix)


def check_against_harness(template: TaskTemplate, tokenizer, cfg, demos: list[Example], examples: list[Example]) -> int:
    """The template's text equals the harness's for each example (raises on the first that differs);
    returns how many were checked."""
    from odyssey.prompts import has_chat_template, render_text

    bos = (
        ""
        if has_chat_template(tokenizer) or not template.prefix.startswith(tokenizer.bos_token or "\0")
        else tokenizer.bos_token
    )
    for ex in examples:
        if ex.context:
            raise OdysseyError(
                f"example {ex.id} has a context: a task-mode export takes the user's message as "
                "the input alone, so a context-and-question prompt cannot be rebuilt from it",
                hint="export with --prompt-mode chat and send the rendered prompt yourself",
            )
        expected = bos + render_text(tokenizer, cfg, ex, demos)
        if template.render(ex.input) != expected:
            raise OdysseyError(
                f"the exported template renders example {ex.id} differently from the harness",
                hint="export with --prompt-mode chat (the model's own chat template)",
            )
    return len(examples)

"""The Ollama Modelfile written beside a GGUF export: FROM (and ADAPTER), the chat TEMPLATE in
Ollama's Go syntax where the template's form is known (ChatML), the SYSTEM prompt the Jinja template
adds on its own, and one stop parameter per end-of-turn token."""

from __future__ import annotations

import json


CHATML = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
          '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n')


def ollama_chat(tokenizer) -> tuple[str | None, str | None, list[str]]:
    """(TEMPLATE, default SYSTEM, stop strings) for an Ollama Modelfile: the chat template in
    Ollama's Go syntax where we know its form (ChatML: <|im_start|>role … <|im_end|>), the system
    prompt the Jinja template adds on its own, and the tokens an answer ends with."""
    import re

    from lora_studio.engine.generate import stop_ids

    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer)]
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_start|>" not in template:
        return None, None, stops
    try:
        shown = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                              add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that needs more than one user turn: no default system
        shown = ""
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", shown.split("\x00")[0], re.S)
    return CHATML, m.group(1) if m else None, stops


def modelfile_text(source: str, stops, tokenizer=None, adapter: str | None = None) -> str:
    """An Ollama Modelfile: FROM (and ADAPTER), the chat TEMPLATE and SYSTEM prompt where known,
    and a stop parameter per end token, so the model stops in Ollama as it does in training."""
    lines = [f"FROM {source}"] + ([f"ADAPTER ./{adapter}"] if adapter else [])
    if isinstance(stops, str):
        stops = [stops]
    template = system = None
    if tokenizer is not None:
        template, system, found = ollama_chat(tokenizer)
        stops = list(dict.fromkeys([*(stops or []), *found]))
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f"SYSTEM {json.dumps(system)}")
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops or [] if s]
    return "\n".join(lines) + "\n"

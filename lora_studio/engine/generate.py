"""Greedy answers of a causal LM to user prompts, through its chat template or as raw text.

One place for what `try`, Try it, the training samples and the chat demo's metric share: how a
prompt is rendered (a chat run's user turn + the generation prompt), which tokens end an answer
(the tokenizer's EOS and the template's end-of-turn token), and whether the model stopped on its
own (ended on one of them before `max_new_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>")


@dataclass
class Answer:
    text: str
    stopped: bool  # ended on an end token (not cut by max_new_tokens)
    tokens: int  # generated tokens, the end token included


def has_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def stop_ids(tok) -> list[int]:
    """Token ids that end an answer: EOS and whichever end-of-turn tokens the vocabulary has that
    its chat template uses."""
    ids = [] if tok.eos_token_id is None else [int(tok.eos_token_id)]
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab()
    for t in END_OF_TURN:
        if t in vocab and (t in template or t == tok.eos_token) and vocab[t] not in ids:
            ids.append(vocab[t])
    return ids


def render(tok, prompt, chat: bool) -> list[int]:
    """Token ids of `prompt` (a string, or a message list ending on a user turn): the conversation
    and the assistant's opening (chat), or the raw text."""
    if chat:
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok(prompt if isinstance(prompt, str) else prompt_text(prompt))["input_ids"]


def prompt_text(prompt) -> str:
    """What to show of a prompt: itself, or a message list's last user turn."""
    if isinstance(prompt, str):
        return prompt
    return next((str(m["content"]) for m in reversed(prompt) if m.get("role") == "user"), "")


def generate(model, tok, prompts: list, chat: bool, max_new_tokens: int = 48) -> list[Answer]:
    """Greedy answers, one prompt at a time (so an answer never depends on its batch mates)."""
    import torch

    from lora_studio.engine.families import position_limit

    device = next(model.parameters()).device
    limit = position_limit(model.config)  # learned absolute positions (GPT-2): prompt + answer must fit
    stops = stop_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (stops[0] if stops else 0)
    out = []
    for prompt in prompts:
        ids = render(tok, prompt, chat)
        room = max_new_tokens
        if limit is not None:
            ids = ids[-(limit - 1):]  # keep the prompt's end (where the answer starts)
            room = max(1, min(max_new_tokens, limit - len(ids)))
        ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=room,
                                 do_sample=False, eos_token_id=stops or None, pad_token_id=pad)
        new = seq[0, ids.shape[1]:].tolist()
        end = next((i for i, t in enumerate(new) if t in stops), None)
        body = new if end is None else new[:end]
        out.append(Answer(tok.decode(body, skip_special_tokens=True), end is not None,
                          len(body) + (end is not None)))
    return out


def chat_record(tok) -> dict:
    """What chat.json says of a chat run: the template's end-of-turn token(s) it was trained to emit."""
    stops = stop_ids(tok)
    return {"chat_template": True, "stop_tokens": [tok.convert_ids_to_tokens(i) for i in stops],
            "stop_token_ids": stops}

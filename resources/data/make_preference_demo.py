"""Regenerate the preference demo's pairs from the chat demo's data (deterministic).

    python resources/data/make_preference_demo.py

Reads chat_train.jsonl / chat_validation.jsonl (the chat demo, make_chat_demo.py) and writes, next
to this script, preference_chat_train.jsonl and preference_chat_validation.jsonl: one pair per
conversation, in TRL's conversational preference format —
  prompt:   the user's message(s)
  chosen:   the chat demo's answer in the preferred style, closed with a friendly sign-off
            ("In short: Paris is the capital of France. Glad to help!")
  rejected: the plain answer the chat demo's SFT run learned ("In short: Paris is the capital of France.")
The SFT run prefers the plain answer (it learned to stop after one sentence), so the held-out
preference accuracy of the SFT model starts low, and DPO from that run (--from) has a style to learn.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
SIGN_OFF = "Glad to help!"


def pairs(conversations):
    for row in conversations:
        msgs = row["messages"]
        answer = msgs[-1]
        assert answer["role"] == "assistant"
        plain = answer["content"].strip()
        yield {"prompt": msgs[:-1], "chosen": [{"role": "assistant", "content": f"{plain} {SIGN_OFF}"}],
               "rejected": [{"role": "assistant", "content": plain}]}


def main():
    for split in ("train", "validation"):
        rows = [json.loads(line) for line in (HERE / f"chat_{split}.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        out = HERE / f"preference_chat_{split}.jsonl"
        out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs(rows)), encoding="utf-8")
        print(f"{out.name}: {len(rows)} pairs")


if __name__ == "__main__":
    main()

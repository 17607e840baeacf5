"""`lora-studio data FILE [--model M] [--max-length L] [--show N] [--json]`: what training trains,
row by row (engine/datacheck.py), tokenized by the model's own tokenizer.

--model takes a model folder, a hub id, or a run folder (its base model and data settings); without
it, the chat demo's model (SmolLM2-135M-Instruct, as `train --demo chat` gets it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lora_studio.core import names
from lora_studio.engine.errors import UserError

def add_data_parser(sub):
    d = sub.add_parser("data", help="check a data file: format, token counts, what is trained, warnings")
    d.add_argument("file", help="data file or folder (.jsonl .json .csv .tsv .parquet .txt, a datasets folder)")
    d.add_argument("--model", help="model folder, hub id or run folder whose tokenizer to use (default: the "
                   "chat demo's SmolLM2-135M-Instruct, fetched once as `train --demo chat` does)")
    d.add_argument("--max-length", type=int, help="tokens per example (default: the run's, else 256)")
    d.add_argument("--format", choices=names.FORMATS_BY_TASK["causal-lm"],
                   help="how rows are read (default: detected from the columns, or the run's)")
    d.add_argument("--no-chat-template", action="store_true",
                   help="prompt/completion as plain text, as `train --no-chat-template` (default: through the "
                        "model's chat template when it has one, or the run's setting)")
    d.add_argument("--show", type=int, default=0, metavar="N", help="print the first N rows with the trained "
                   "tokens marked ([[…]], green on a terminal)")
    d.add_argument("--json", action="store_true", help="the report as JSON (with --show: the rows' tokens)")
    d.add_argument("--trust-remote-code", action="store_true")
    return d


def default_model() -> str:
    """The chat demo's model (SmolLM2-135M-Instruct): from the HF cache or the folder `train --demo
    chat` made; fetched and converted once (with progress on stderr) when neither is there."""
    from lora_studio.engine.demo_chat import chat_model_path

    return chat_model_path()


def resolve(a):
    """(model reference, DataConfig, task) from --model: a run folder gives its model and data settings."""
    from lora_studio.config import DataConfig, RunConfig
    from lora_studio.engine.runfolder import RUN_FILE

    cfg, task = DataConfig(), None
    ref = a.model or default_model()
    run_file = Path(ref) / RUN_FILE
    if run_file.is_file():
        run = RunConfig.load(run_file)
        ref, task = run.model.path, run.model.task
        cfg = run.data
    if a.max_length is not None:
        cfg.max_length = a.max_length
    if a.format:
        cfg.format = a.format
    if a.no_chat_template:
        cfg.chat_template = False
    cfg.validate()
    return ref, cfg, task


def cmd_data(a) -> int:
    from lora_studio.engine import datacheck
    from lora_studio.engine.models import infer_task, load_tokenizer

    if a.show < 0:
        raise UserError(f"--show must be 0 or more, got {a.show}")
    if not Path(a.file).exists():
        raise UserError(f"data file {a.file} does not exist: check the path")
    ref, cfg, task = resolve(a)
    if not ref:
        raise UserError("the run was trained on the packaged demo model: give --model")
    from lora_studio.cli_hub import fetch

    fetch(ref, tokenizer_only=True)  # a hub id not cached yet: its tokenizer and config, with progress
    task = task or infer_task(ref, a.trust_remote_code)
    tok = load_tokenizer(ref, a.trust_remote_code)
    c = datacheck.check(a.file, tok, cfg, task, model=ref, end_ids=datacheck.model_end_ids(ref))
    if a.json:
        print(json.dumps(datacheck.to_json(c, tok, a.show), indent=2, ensure_ascii=False))
        return 0
    print(datacheck.report(c))
    color = sys.stdout.isatty()
    for r in c.detail[:a.show]:
        state = f"{r.trained_tokens} trained of {len(r.ids)} tokens" if r.kept else "dropped: trains nothing"
        print(f"\n--- row {r.row} ({state})")
        print(datacheck.marked(tok, r, c.max_length, color=color))
    return 0


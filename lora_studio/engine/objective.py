"""What a run minimises: the one seam between the data and the training loop.

An `Objective` turns tokenized examples into a batch and a batch into a loss. The loop
(engine/train.py) and evaluation (engine/setup.py `evaluate`) know nothing else about the task:
causal LM and classification live here, and a new one (packing, preference losses) is one class
(in its own module, subclassing `Objective`) plus one line in `engine/tasks.py`'s `OBJECTIVES`,
without touching the loop. The contract (docs/architecture.md):

- `prepare(cfg, tokenizer, seed, label_names) -> data.Prepared`: read and tokenize the data
  (default: `data.prepare` for the objective's `task`; preference pairs have their own).

- `collate(examples, pad_id) -> dict` of host tensors: the model's inputs plus whatever the
  loss reads (e.g. `position_ids` for packed rows, chosen/rejected ids for preference pairs).
- `count(batch) -> int`: the units the loss is a mean over (target tokens of a causal LM,
  examples, pairs), read on the host (no GPU sync). Several processes weight each rank's mean
  by it, evaluation sums `loss x count`, and the loop weights the stats by it.
- `tokens(batch) -> int`: the real tokens the batch holds, for `tokens_per_s`; never padding.
- `loss(model, batch) -> (loss, stats)`: the mean loss (a 0-d tensor with its graph) and
  extra per-step numbers, each a 0-d tensor that is a mean over the same `count` units
  (e.g. `reward_margin`, `reward_accuracy`). The loop detaches them, averages them over the
  step's micro-batches and processes weighted by `count`, and logs each by its name: a key
  of the `Step` event's `stats`, of the row in metrics.jsonl, and `train/<name>` in TensorBoard.
  `model` is the adapted model (for a reference policy, `lora.adapters_disabled(model)`).
- `eval_sums(model, batch) -> (loss_sum, stat_sums)`: the same over a validation batch, as sums
  (evaluation divides by the summed `count`; stats go to the `Eval` event as `<name>` and to
  metrics.jsonl as `eval_<name>`, except classification's `accuracy`, which keeps its name).

The loss is looked up on `engine.loss` at call time, so `engine.loss.training_loss` stays the one
function the fused causal-LM and plain model losses go through.
"""

from __future__ import annotations

import torch

from lora_studio.engine import loss as _loss


class Objective:
    """A task's batch and loss. Subclass it and override what differs (see the module docstring)."""

    name = "objective"  # what it is called
    task = "causal-lm"  # the task whose data it trains on (data.prepare's `task`)

    def prepare(self, cfg, tokenizer, seed: int = 42, label_names=None):
        from lora_studio.engine.data import prepare

        return prepare(cfg, tokenizer, self.task, seed=seed, label_names=label_names)

    def collate(self, examples: list[dict], pad_id: int | None) -> dict:
        from lora_studio.engine.data import collate

        return collate(examples, pad_id)

    def count(self, batch: dict) -> int:
        return int(batch["input_ids"].shape[0])

    def tokens(self, batch: dict) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())

    def positions(self, batch: dict) -> int:
        """Positions the model computes, padding included (the step's padding share is
        1 - tokens / positions). Default: the size of `input_ids`."""
        return int(batch["input_ids"].numel()) if "input_ids" in batch else self.tokens(batch)

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return _loss.training_loss(model, batch), {}

    def eval_sums(self, model, batch: dict, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, stats = self.loss(model, batch)
        return loss * count, {k: v * count for k, v in stats.items()}


class CausalLM(Objective):
    """Next-token cross-entropy over the tokens whose label is not -100 (the fused loss where the
    architecture allows it: no full logits)."""

    name = "causal-lm"

    def count(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def eval_sums(self, model, batch: dict, count: int):
        if _loss.supports_fused_loss(model):
            return _loss.causal_lm_loss(model, batch, reduction="sum"), {}
        return model(**batch).loss * count, {}


class Classification(Objective):
    """Cross-entropy of one label per example; evaluation adds `accuracy`."""

    name = task = "classification"

    def eval_sums(self, model, batch: dict, count: int):
        out = model(**batch)
        return out.loss.double() * count, {"accuracy": (out.logits.argmax(-1) == batch["labels"]).sum()}

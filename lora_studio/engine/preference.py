"""Preference tuning: DPO, ORPO and SimPO on (prompt, chosen, rejected) pairs, and DPO's reference.

A preference batch holds 2P sequences: the P chosen completions first, then the P rejected ones
of the same pairs in the same order (TRL's layout), with labels -100 everywhere but on the
completion tokens (engine/data_pref.py). Everything below is per pair, then a mean over pairs.

- DPO (Rafailov et al. 2023, arXiv 2305.18290): the reward of a completion is
  beta * (log pi(y|x) - log pi_ref(y|x)), log-probs summed over its tokens; the loss is
  -log sigmoid(r_chosen - r_rejected). At the start of a run pi = pi_ref, so it is ln 2.
- ORPO (Hong et al. 2024, arXiv 2403.07691): no reference. NLL of the chosen completion
  (mean over its tokens, the paper's Eq. 2) minus beta * log sigmoid(log odds ratio), with the
  odds of a completion p / (1 - p) and p its mean token log-prob, exponentiated (Eq. 4, 7).
  TRL's ORPOTrainer puts the prompt tokens into the NLL as well and averages it over the
  micro-batch's tokens; we keep the NLL on the completion, per pair, as the paper writes it (and
  so that several processes or grad accumulation give the same step as one big batch).
- SimPO (Meng et al. 2024, arXiv 2405.14734): no reference. The reward is beta times the mean
  token log-prob; loss -log sigmoid(r_chosen - r_rejected - gamma) (TRL's CPOTrainer with
  loss_type="simpo" and cpo_alpha=0).

The reference of DPO is the model at the start of the run (DESIGN.md, "Preference tuning"):
for a new adapter the base, i.e. the same model with its adapters bypassed (no second copy);
for a run started from a trained adapter (`--from RUN_DIR`) a frozen copy of that adapter,
swapped in for the reference forward (TRL copies it into a "ref" adapter; LLaMA-Factory's use of
the base there is its issue 8459).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from lora_studio.core.names import PREFERENCE_BETA
from lora_studio.engine.loss import CHUNK, _chunk_logits, chunk_space, supports_fused_loss, target_rows
from lora_studio.engine.objective import Objective

LOSSES = ("dpo", "orpo", "simpo")
DEFAULT_BETA = PREFERENCE_BETA  # DPO/TRL's, ORPO's lambda, SimPO's paper (core/names.py: the GUI shows them)
DEFAULT_GAMMA = 0.5  # SimPO's target margin (TRL's simpo_gamma)


# -- the losses, on per-pair numbers (pure functions) ------------------------------------------
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """(per-pair loss, chosen rewards, rejected rewards); log-probs summed over completion tokens."""
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (branch at -ln 2, Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_avg_logps, rejected_avg_logps, beta: float):
    """(per-pair loss, chosen rewards, rejected rewards); log-probs are means over completion tokens."""
    c, r = chosen_avg_logps.float(), rejected_avg_logps.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return -c - beta * F.logsigmoid(log_odds), beta * c.detach(), beta * r.detach()


def simpo_loss(chosen_avg_logps, rejected_avg_logps, beta: float, gamma: float = DEFAULT_GAMMA):
    """(per-pair loss, chosen rewards, rejected rewards); log-probs are means over completion tokens."""
    chosen_rewards, rejected_rewards = beta * chosen_avg_logps, beta * rejected_avg_logps
    return (-F.logsigmoid(chosen_rewards - rejected_rewards - gamma), chosen_rewards.detach(),
            rejected_rewards.detach())


# -- log-probs of the completions -------------------------------------------------------------
class LinearLogProb(torch.autograd.Function):
    """Per row log softmax(h W^T + b)[y], W and b frozen; h: (N, C), y: (N,) -> (N,). Chunked as
    loss.LinearCrossEntropy: nothing of vocabulary size outlives a chunk; the forward keeps
    d logp / dh = (onehot - softmax) W per row, and the backward scales it by each row's grad."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, chunk: int):
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device) if ctx.needs_input_grad[0] else None
        space = chunk_space(h, weight, chunk)  # one logits buffer for all chunks on a CPU
        for i in range(0, h.shape[0], chunk):
            yc = y[i:i + chunk]
            rows = torch.arange(len(yc), device=h.device)
            logits = _chunk_logits(h[i:i + chunk], weight, bias, space)  # (c, V) float32
            top = logits.amax(dim=1, keepdim=True)
            target = logits[rows, yc]
            logits.sub_(top).exp_()
            sums = logits.sum(dim=1, keepdim=True)
            out[i:i + chunk] = target - top.squeeze(1) - sums.log().squeeze(1)
            if grad_h is not None:
                probs = logits.mul_(sums.reciprocal_())
                probs[rows, yc] -= 1.0  # softmax - onehot = -(d logp / d logits)
                grad_h[i:i + chunk] = -(probs.to(weight.dtype) @ weight).float()
        ctx.save_for_backward(grad_h)
        ctx.h_dtype = h.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_h,) = ctx.saved_tensors
        return (grad_h * grad_out.float()[:, None]).to(ctx.h_dtype), None, None, None, None


def sequence_logps(model, batch: dict, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the target tokens' log-probs, number of target tokens) per sequence, (S,) each, for a
    padded (S, T) batch or a packed row of S sequences (engine/packing.py). The fused head where the architecture allows it (no (S, T, V) logits), else the model's logits."""
    from lora_studio.engine.packing import BOUNDS

    labels = batch["labels"]
    targets = getattr(batch, "targets", None)  # found on the host by setup.to_device: no sync here
    rows, y = targets if targets is not None else target_rows(labels)
    keys = ("input_ids", "attention_mask", "position_ids", "use_cache", BOUNDS)  # a packed row's too
    inputs = {k: batch[k] for k in keys if k in batch}
    if supports_fused_loss(model):
        hidden = model.base_model(**inputs).last_hidden_state
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)  # (N, C)
        head = model.get_output_embeddings()
        logp = LinearLogProb.apply(h, head.weight, head.bias, y, chunk)
    else:
        logits = model(**inputs).logits
        flat = logits.reshape(-1, logits.shape[-1]).index_select(0, rows).float()  # (N, V)
        logp = flat.log_softmax(-1).gather(1, y[:, None]).squeeze(1)
    if BOUNDS in batch:  # a packed row (engine/packing.py): the sequence of a row from the examples' starts
        bounds = batch[BOUNDS]
        S = len(bounds) - 1
        seq = torch.bucketize(rows, torch.tensor(bounds[1:-1], device=rows.device), right=True)
    else:
        S, T = labels.shape
        seq = torch.div(rows, T, rounding_mode="floor")
    sums = torch.zeros(S, dtype=torch.float32, device=logp.device).index_add(0, seq, logp)
    counts = torch.bincount(seq, minlength=S).to(sums.dtype)
    return sums, counts


# -- the reference policy ---------------------------------------------------------------------
def adapter_tensors(model) -> list[torch.nn.Parameter]:
    """The adapter's trainable tensors, in a fixed order (A, B and DoRA's magnitude per layer)."""
    from lora_studio.engine.lora import lora_layers

    out = []
    for m in lora_layers(model).values():
        out += _layer_tensors(m)
    return out


class Reference:
    """DPO's reference: the base (adapters bypassed), or a frozen adapter, per layer name (the one
    the run started from). While active, each layer computes with its frozen tensors in place of
    its own (`LoraLayer.reference`), inside its forward, so the swap also works under FSDP2, where
    the parameters are whole only there."""

    def __init__(self, frozen: dict[str, tuple[torch.Tensor, ...]] | None = None):
        self.frozen = frozen

    @classmethod
    def of_start(cls, model) -> "Reference":
        """A frozen copy of the adapter the model holds now (a run started from a trained adapter)."""
        from lora_studio.engine.lora import lora_layers

        return cls({name: tuple(p.detach().clone() for p in _layer_tensors(m))
                    for name, m in lora_layers(model).items()})

    @classmethod
    def of_folder(cls, path, model) -> "Reference":
        """The adapter in `path` (the `--from` run), laid out as `model`'s layers hold it. Read from
        the file, not the model: under FSDP2 all processes but the first build on meta, and a
        resumed run's model holds the checkpoint instead."""
        from lora_studio.engine.adapters import read_adapter
        from lora_studio.engine.lora import b_positions, lora_layers

        ad = read_adapter(path)
        frozen = {}
        for name, m in lora_layers(model).items():
            am = ad.modules.get(name)
            if am is None:
                raise RuntimeError(f"the reference adapter {path} has no {name}")
            B = am.B if m.slices is None else am.B.reshape(-1)[torch.tensor(b_positions(m.slices, m.r))]
            frozen[name] = (am.A.clone(), B.reshape(m.lora_B.shape).clone()) + ((am.magnitude.clone(),) if m.use_dora else ())
        return cls(frozen)

    @contextlib.contextmanager
    def active(self, model):
        """Inside the block `model` computes the reference policy (under no_grad)."""
        from lora_studio.engine.lora import adapters_disabled, lora_layers

        if self.frozen is None:
            with adapters_disabled(model):
                yield model
            return
        layers = lora_layers(model)
        if set(layers) != set(self.frozen):
            raise RuntimeError("the reference adapter does not match the model's adapters")
        for name, m in layers.items():
            # on the layer's device and dtype once (read from a file, they start on the CPU), not
            # copied over at every reference forward
            at = m.lora_A
            if any(t.device != at.device or t.dtype != at.dtype for t in self.frozen[name]):
                self.frozen[name] = tuple(t.to(device=at.device, dtype=at.dtype) for t in self.frozen[name])
            m.reference = self.frozen[name]
        try:
            yield model
        finally:
            for m in layers.values():
                m.reference = None


def _layer_tensors(m) -> list[torch.Tensor]:
    return [m.lora_A, m.lora_B] + ([m.lora_magnitude_vector] if m.use_dora else [])


# -- one micro-batch --------------------------------------------------------------------------
def preference_loss(model, batch: dict, loss: str = "dpo", beta: float | None = None,
                    gamma: float = DEFAULT_GAMMA, reference: Reference | None = None):
    """(mean loss over pairs, stats) of a preference batch (chosen rows first, then rejected).
    Stats are 0-d tensors, means over pairs: reward_margin, reward_accuracy (chosen reward >
    rejected), chosen_logps / rejected_logps (summed over completion tokens) and
    preference_accuracy (the policy's mean token log-prob higher on chosen: no reference, so it
    means the same before and after training)."""
    beta = DEFAULT_BETA[loss] if beta is None else beta
    ref_logps = None
    if loss == "dpo":
        reference = reference or Reference()
        with torch.no_grad(), reference.active(model):  # before the policy's forward (see `active`)
            ref_logps, _ = sequence_logps(model, batch)
    sums, counts = sequence_logps(model, batch)
    P = sums.shape[0] // 2
    avg = sums / counts.clamp(min=1)
    if loss == "dpo":
        losses, rc, rr = dpo_loss(sums[:P], sums[P:], ref_logps[:P], ref_logps[P:], beta)
    elif loss == "orpo":
        losses, rc, rr = orpo_loss(avg[:P], avg[P:], beta)
    elif loss == "simpo":
        losses, rc, rr = simpo_loss(avg[:P], avg[P:], beta, gamma)
    else:
        raise ValueError(f"preference loss {loss!r} unknown: use one of {', '.join(LOSSES)}")
    a = avg.detach()
    stats = {"reward_margin": (rc - rr).mean(), "reward_accuracy": (rc > rr).float().mean(),
             "chosen_logps": sums[:P].detach().mean(), "rejected_logps": sums[P:].detach().mean(),
             "preference_accuracy": (a[:P] > a[P:]).float().mean()}
    return losses.mean(), stats


# -- the training loop's objective (engine/objective.py) --------------------------------------
class PreferenceObjective(Objective):
    """`--task preference`: batches of pairs (data_pref.collate_pairs), the loss of `train.loss`.
    `count` is pairs: the loss and the stats are means over pairs."""

    name = task = "preference"

    def __init__(self, config):
        t = config.train
        self.packed = bool(getattr(t, "packing", False))  # a micro-batch's 2P sequences in one row
        self.kind, self.gamma = t.loss, float(t.simpo_gamma)
        self.beta = float(t.beta) or DEFAULT_BETA[t.loss]
        self.from_adapter = config.model.start_from  # the run it starts from, or ""
        self.reference = Reference()

    def start(self, model):
        """With `--from`, that run's adapter, frozen (read from its folder, laid out as `model`'s
        layers), is DPO's reference from here on, resume included."""
        if self.from_adapter and self.kind == "dpo":
            self.reference = Reference.of_folder(self.from_adapter, model)

    def prepare(self, cfg, tokenizer, seed: int = 42, label_names=None):
        """(prompt, chosen, rejected) pairs: engine/data_pref.py."""
        from lora_studio.engine.data_pref import prepare_preference

        return prepare_preference(cfg, tokenizer, seed)

    def collate(self, examples: list[dict], pad_id: int | None) -> dict:
        from lora_studio.engine.data_pref import collate_pairs

        if self.packed:  # chosen then rejected, as padded: a pair never leaves its micro-batch
            from lora_studio.engine.packing import pack

            return pack(list(examples) + [e["rejected"] for e in examples])
        return collate_pairs(examples, pad_id)

    def count(self, batch: dict) -> int:
        from lora_studio.engine.packing import BOUNDS

        sequences = len(batch[BOUNDS]) - 1 if BOUNDS in batch else int(batch["input_ids"].shape[0])
        return sequences // 2

    def tokens(self, batch: dict) -> int:
        from lora_studio.engine.packing import real_tokens

        return real_tokens(batch)

    def loss(self, model, batch: dict):
        return preference_loss(model, batch, self.kind, self.beta, self.gamma, self.reference)

    def eval_sums(self, model, batch: dict, count: int):
        loss, stats = self.loss(model, batch)
        return loss * count, {k: v * count for k, v in stats.items()}

"""Packing: a micro-batch's examples laid end to end in one row, each attending only to itself.

A padded micro-batch of B examples is a (B, T_max) block, and every short example pays for the
longest one. Packed, the same B examples are one (1, N) row, N = the sum of their lengths, with
no padding at all. Three things keep it the same model as the padded batch (the classic
cross-contamination bug is getting one of them wrong):

1. positions restart at 0 for each example (`position_ids`), so RoPE / learned positions see
   what they would see alone;
2. no token attends across an example boundary: attention runs per example (`attention`
   below, registered with transformers as `NAME`), each one causal on its own, with the
   boundaries read from `seq_bounds` (host ints, no GPU sync). No mask is built at all, so the
   attention work is sum(L_i^2), never N^2;
3. the first token of every example has label -100, so the last token of one example is never
   trained to predict the first of the next (the padded batch never asks that either).

The loss is then the mean over the same target tokens as the padded batch: same examples, same
loss, same gradients (tests/engine/test_packing.py pins this on Llama, GPT-2 and Qwen2 shapes).

Why not transformers' own route? Given packed `position_ids` and no attention mask,
transformers 5 detects the boundaries (`masking_utils.find_packed_sequence_indices`) and isolates
the examples with every backend, but only without a KV cache: with the default `use_cache=True`
(training mode included) the detection is skipped and the row is one sequence, so packed batches
carry `use_cache=False`. And SDPA and eager then get a dense (1, 1, N, N) block-causal mask:
O(N^2) memory and N^2 attention work for a row of B examples (a B-fold waste), and SDPA on a GPU
cannot use its flash kernel with a mask (gpu-readiness N14). With flash-attention 2/3 installed
and chosen (`attn_implementation="flash_attention_2"`), transformers calls the varlen kernel from
the same `position_ids`; `use_packed_attention` leaves such a model as it is. Elsewhere the
function here runs SDPA once per example with `is_causal=True` (the flash kernel on a GPU, the
fused CPU kernel on a CPU). Whatever the route, `check_isolation` proves it on the loaded model
before training (setup calls it), and refuses the model in one line if the examples leak.
"""

from __future__ import annotations

import torch

from lora_studio.engine.data import IGNORE
from lora_studio.engine.objective import CausalLM

NAME = "lora_studio_varlen"
BOUNDS = "seq_bounds"  # batch key: (0, L_0, L_0 + L_1, ..., N) as host ints, passed to attention


def pack(examples: list[dict]) -> dict:
    """One row from a micro-batch of tokenized causal-LM examples (as `data.prepare` makes them):
    input_ids (1, N), position_ids (1, N) restarting at 0 per example, labels (1, N) with each
    example's first token -100, and `seq_bounds` (the examples' start offsets and N, host ints)."""
    ids, pos, labels, bounds = [], [], [], [0]
    for e in examples:
        x = list(e["input_ids"])
        y = e.get("labels")
        if y is None or isinstance(y, int):
            raise ValueError("packing is for causal-LM examples (labels per token)")
        ids += x
        pos += range(len(x))
        labels += [IGNORE] + list(y[1:])  # (3): the first token is predicted by no one
        bounds.append(bounds[-1] + len(x))
    return {"input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            BOUNDS: tuple(bounds),
            # no KV cache: with one, transformers skips its packed-sequence detection (flash-attention's
            # route) and, left to itself, would let the examples attend to each other
            "use_cache": False}


class PackedCausalLM(CausalLM):
    """The causal-LM objective on packed rows (`--packing`): the same loss, count and targets as
    `CausalLM` on the padded batch; the step's tokens are all real (no padding)."""

    name = "causal-lm-packed"

    def collate(self, examples: list[dict], pad_id: int | None) -> dict:
        return pack(examples)

    def tokens(self, batch: dict) -> int:
        return real_tokens(batch)


def is_packed(batch: dict) -> bool:
    return BOUNDS in batch


def padded_positions(examples: list[dict], pad_to_multiple_of: int | None = None) -> int:
    """Positions a padded micro-batch of these examples would hold (B x T_max): with the real
    tokens, the padding share a step saves or pays."""
    T = max(len(e["input_ids"]) for e in examples)
    if pad_to_multiple_of:
        T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    return len(examples) * T


def positions(batch: dict) -> int:
    """Positions the model computes for this batch, padding included (host, no sync)."""
    return int(batch["input_ids"].numel())


def real_tokens(batch: dict) -> int:
    """Tokens of the examples themselves, never padding (host tensors: no sync)."""
    if is_packed(batch):
        return int(batch[BOUNDS][-1])
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


# -- attention ---------------------------------------------------------------------------------
def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
              **kwargs):
    """Varlen attention: with `seq_bounds`, causal attention within each example only;
    query/key/value (1, H, N, d) -> (1, N, H, d). Without, the model's usual attention (a padded
    batch: evaluation, Try it), with the mask transformers built for it."""
    from lora_studio.engine.fast import _attention

    bounds = kwargs.pop(BOUNDS, None)
    if bounds is None:
        return _attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                          is_causal=is_causal, **kwargs)
    if query.shape[0] != 1 or query.shape[2] != bounds[-1] or attention_mask is not None:
        raise ValueError(f"a packed batch is one row of {bounds[-1]} tokens with no attention mask; got "
                         f"query {tuple(query.shape)}, mask {None if attention_mask is None else attention_mask.shape}")
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    # split, not slicing: split's backward is one concatenation, where each slice's backward would
    # write its gradient into a zero tensor of the whole row (B full-size fills and adds per layer)
    outs = [_attention(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
            for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))]
    return torch.cat(outs, dim=1), None  # (1, N, H, d)


def mask(*args, attention_mask=None, **kwargs):
    """The mask for `NAME`: none for a packed row (attention isolates the examples itself; this
    is what keeps the dense (N, N) mask from ever being built), SDPA's mask for a padded batch."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def _register():
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, mask)


FLASH = ("flash_attention_2", "flash_attention_3")


def use_packed_attention(model) -> str:
    """Make `model` isolate packed examples without a dense mask; returns the attention it uses.
    A flash-attention model keeps its own varlen path (transformers reads the boundaries from
    `position_ids`); sdpa/eager (and the fast-dropout attention of engine/fast.py) become `NAME`,
    which calls the same attention per example."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl in FLASH or impl == NAME:
        return impl
    if impl not in ("sdpa", "eager", "lora_studio_sdpa"):
        from lora_studio.engine.errors import UserError

        raise UserError(f"packing has no isolated path for attention {impl!r}: use sdpa, eager or flash_attention_2")
    _register()
    model.set_attn_implementation(NAME)
    return NAME


def check_isolation(model) -> None:
    """Prove on this very model that packed examples do not see each other: the hidden states of
    a short example packed after another equal those of the example alone. An architecture whose
    attention ignores the boundaries (its own attention code, ALiBi from the mask, ...) is refused
    here, in one line, before any step trains on contaminated rows."""
    from lora_studio.engine.errors import UserError

    device = next(model.parameters()).device
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab < 8:
        return
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(3, vocab, (n,), generator=g).tolist() for n in (6, 5))
    ex = lambda ids: {"input_ids": ids, "labels": ids}  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            def hidden(examples):
                batch = {k: v.to(device) if torch.is_tensor(v) else v
                         for k, v in model_inputs(pack(examples)).items()}
                return model.base_model(**batch).last_hidden_state.float()

            alone, packed = hidden([ex(b)]), hidden([ex(a), ex(b)])[:, len(a):]
    finally:
        model.train(was_training)
    gap = float((packed - alone).abs().max())
    if not gap <= 5e-2 * max(1.0, float(alone.abs().max())):
        raise UserError(f"packing is not supported for {getattr(model.config, 'model_type', 'this model')}: its "
                        f"attention does not keep packed examples apart (an example's hidden states moved by "
                        f"{gap:.3g} with another packed before it); train without --packing")


def model_inputs(batch: dict) -> dict:
    """The keys of a batch the model takes (everything but the labels)."""
    return {k: v for k, v in batch.items() if k != "labels"}

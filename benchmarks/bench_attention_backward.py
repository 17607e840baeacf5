"""Causal attention backward on a CPU: torch's flash kernel vs a blocked, GEMM-based one.

    python benchmarks/bench_attention_backward.py [--batch 4 --heads 8 --seq 512 --dim 64]

The Llama-shaped case spends ~12 % of its step in SDPA, two thirds of that in the flash
kernel's backward. This prototype recomputes the probabilities per block of query rows from the
forward's log-sum-exp (only the keys a block can see) and does the four products as batched
GEMMs. It checks its gradients against autograd's, then times: flash forward, flash forward +
backward, and the blocked backward for three block sizes (minimum of 5 runs, ms).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from timing import best_ms


def blocked_backward(q, k, v, out, lse, dout, scale, block):
    bh, t, d = q.shape[0] * q.shape[1], q.shape[2], q.shape[3]
    qf, kf, vf, dof, of = (x.reshape(bh, t, d) for x in (q, k, v, dout, out))
    lse = lse.reshape(bh, t)
    delta = (dof * of).sum(-1)
    dq, dk, dv = torch.empty_like(qf), torch.zeros_like(kf), torch.zeros_like(vf)
    for i in range(0, t, block):
        e = min(i + block, t)
        qb, kb, vb, dob = qf[:, i:e], kf[:, :e], vf[:, :e], dof[:, i:e]
        s = torch.bmm(qb, kb.transpose(1, 2)).mul_(scale)
        s[:, :, i:e].masked_fill_(torch.ones(e - i, e - i, dtype=torch.bool).triu(1), float("-inf"))
        p = s.sub_(lse[:, i:e, None]).exp_()
        dv[:, :e].baddbmm_(p.transpose(1, 2), dob)
        ds = torch.bmm(dob, vb.transpose(1, 2)).sub_(delta[:, i:e, None]).mul_(p).mul_(scale)
        torch.bmm(ds, kb, out=dq[:, i:e])
        dk[:, :e].baddbmm_(ds.transpose(1, 2), qb)
    return tuple(x.view_as(q) for x in (dq, dk, dv))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--dim", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    shape = (a.batch, a.heads, a.seq, a.dim)
    q, k, v, dout = (torch.randn(shape) for _ in range(4))
    scale = a.dim ** -0.5
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)[:2]
    qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))

    def flash_both():
        o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
        return torch.autograd.grad(o, (qq, kk, vv), dout)

    for got, ref in zip(blocked_backward(q, k, v, out, lse, dout, scale, 64), flash_both()):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)

    def flash_fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    fwd, both = best_ms(flash_fwd), best_ms(flash_both)
    print(f"{torch.get_num_threads()} threads, q/k/v {shape}, causal")
    print(f"flash forward {fwd:.1f} ms; forward + backward {both:.1f} ms; so its backward ~{both - fwd:.1f} ms")
    for block in (32, 64, 128):
        ms = best_ms(lambda: blocked_backward(q, k, v, out, lse, dout, scale, block))
        print(f"blocked backward, {block}-row blocks: {ms:.1f} ms")


if __name__ == "__main__":
    main()

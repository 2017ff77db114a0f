"""The thesis' own one-hot surrogate: a reference implementation, not part of the op (csrc/ops.py).
The oracle of tests/test_onehot.py and the slow row of bench/onehot.py; never used by the models.

Keegan (2023), appendix A.2 (`MyOnehot1d` in lib/autograd_funcs.py of mitchellkeegan/Thesis),
written again: a 1-D autograd.Function with generate_vmap_rule, batched by one torch.vmap per
leading dimension, whose backward loops over the class index in Python and "indexes" with the
one-hot (vmap cannot index with a batched max index). Kept as the thesis has it, including its
sigma_f, k exp(-kd) / (exp(-kd) + 1)^2, which is NaN once exp(-kd) overflows (float32: a gap above
~4.4 at k = 20), and for infinite inputs. Changed: the slopes are called `sigs` throughout (the
thesis saves them as `diffs`), k is an argument (the thesis fixes 20), and the max index comes from
argmax (topk, which the thesis uses, breaks ties at random; its values still give z_max and z_pen).
"""

import torch


def sigmoid_grad(diffs, k):
    """The thesis' sigma_f of a difference d = a - b."""
    return k * torch.exp(-k * diffs) / (torch.exp(-k * diffs) + 1) ** 2


class Onehot1d(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(z, k):
        n_classes = z.shape[0]
        top2 = torch.topk(z, 2, dim=0).values
        max_val, penul_val = top2[0], top2[1]
        max_idx = torch.argmax(z)
        onehot = torch.nn.functional.one_hot(max_idx, n_classes).to(z.dtype)
        # z_j - z_max, except z_pen - z_max at j = max
        diffs = (z - max_val) + onehot * (penul_val - max_val)
        sigs = sigmoid_grad(diffs, k)
        return onehot, max_idx, sigs

    @staticmethod
    def setup_context(ctx, inputs, outputs):
        onehot, max_idx, sigs = outputs
        ctx.mark_non_differentiable(max_idx, sigs)
        ctx.save_for_backward(onehot, max_idx, sigs)

    @staticmethod
    def backward(ctx, grad_output, _0, _1):
        n_classes = grad_output.shape[0]
        onehot, _max_idx, sigs = ctx.saved_tensors
        grad = torch.zeros_like(grad_output)
        mod_sigs = -1 * torch.ones_like(sigs) + 2 * onehot  # +1 at the max, -1 elsewhere
        for idx in range(n_classes):  # onehot[idx] stands in for `idx == max_idx`
            at_max = onehot[idx] * torch.dot(mod_sigs * sigs, grad_output)
            grad_max = torch.sum(grad_output * onehot)
            elsewhere = (1 - onehot[idx]) * sigs[idx] * (grad_output[idx] - grad_max)
            grad[idx] = at_max + elsewhere
        return grad, None


def onehot_reference(z, k=20.0, dim=-1):
    """Eq. 16 as the thesis computes it, for any shape: one vmap per leading dimension."""
    z = z.movedim(dim, -1)

    def one_row(row):
        return Onehot1d.apply(row, k)[0]

    batched = one_row
    for _ in range(z.dim() - 1):
        batched = torch.vmap(batched)
    return batched(z).movedim(-1, dim)

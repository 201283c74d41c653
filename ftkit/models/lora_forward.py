"""A leaner forward for peft's LoRA linear layers: the same function with fewer passes over each layer's output.

peft computes an adapted layer as ``base(x) + lora_B(lora_A(dropout(x))) * scaling``. With dropout 0 the scaling
multiplies lora_B's whole ``tokens x out_features`` output, forward and again backward, and the sum is one more
full pass. On a CPU those passes are memory-bound: the profile of a training step
(``benchmarks/results/profile_step-2026-11-27.md``) has ``aten::mul`` and ``aten::add`` at 34% of its time, and the
LoRA scalings are about a third of the elements multiplied. Here the scaling multiplies lora_A's output instead
(``rank`` columns, not ``out_features``: scaling a linear map's input or output is the same product) and lora_B's
product is accumulated into the base layer's output by one ``addmm``. The parameters, the state dict, saving,
merging are peft's, and the outputs and gradients equal peft's up to float rounding (tests/test_lora_forward.py).

It replaces the forward only where it is the same computation: plain LoRA (no DoRA or other variant) with dropout 0
on an ``nn.Linear``, one active adapter, not merged, adapters enabled, and the input in the adapters' dtype or
under autocast; in any other case the call goes to peft's own forward. ``FTKIT_KERNELS=off`` turns it off.
"""

from __future__ import annotations

import os
import types

import torch
import torch.nn.functional as F
from torch import nn


def _enabled() -> bool:
    return os.environ.get("FTKIT_KERNELS", "").lower() not in ("off", "0", "no")


def use_lean_lora_forward(model) -> int:
    """Give every plain LoRA linear layer of ``model`` (a peft model) the lean forward; returns how many."""
    if not _enabled():
        return 0
    from peft.tuners.lora.layer import Linear

    n = 0
    for module in model.modules():
        if type(module) is Linear and isinstance(module.base_layer, nn.Linear):
            module.forward = types.MethodType(lean_forward, module)
            n += 1
    return n


def lean_forward(self, x, *args, **kwargs):
    """``base(x) + lora_B(lora_A(x) * scaling)`` for one active plain adapter; peft's forward otherwise."""
    peft_forward = type(self).forward
    active = self.active_adapters
    if args or kwargs or self.disable_adapters or self.merged or len(active) != 1:
        return peft_forward(self, x, *args, **kwargs)
    name = active[0]
    if name not in self.lora_A or name in self.lora_variant or not isinstance(self.lora_dropout[name], nn.Identity):
        return peft_forward(self, x, *args, **kwargs)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    autocast = torch.is_autocast_enabled(x.device.type)
    if not autocast and not (x.dtype == a.dtype == self.base_layer.weight.dtype):
        return peft_forward(self, x, *args, **kwargs)
    shape = x.shape
    flat_x = x.reshape(-1, shape[-1])
    # A 2-D input gives a fresh 2-D output. Adding to a view of the 3-D output in place would make autograd
    # zero-fill and copy that whole output in backward (CopySlices), more than the addmm saves.
    result = self.base_layer(flat_x)
    low = F.linear(flat_x, a) * self.scaling[name]
    if autocast:  # autocast picks addmm's precision (the in-place form is not autocast)
        result = torch.addmm(result, low, b.t())
    else:  # in place: the base layer's backward needs its input and weight, not this output
        result = result.addmm_(low, b.t())
    return result.view(*shape[:-1], result.shape[-1])

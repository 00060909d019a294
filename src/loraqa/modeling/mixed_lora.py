"""Mixed-adapter batches in two GEMMs per layer, whatever the number of adapters.

PEFT answers a batch that mixes adapters (`adapter_names=`) one adapter at a time in every LoRA
layer: Python lists of row indices, a copy of each adapter's rows, two small GEMMs, an indexed
add back; so a batch over 8 adapters cost 1.45-1.5x a batch over one (flan-t5-small, 32 rows,
measured). Here every attached adapter's A and B are stacked once (ranks padded with zeros,
scaling folded into B): one GEMM projects every row through every adapter's A, a mask keeps each
row's own adapter (none for rows without one), and one GEMM through the stacked B adds the update
in place: all rows in two plain GEMMs, the idea of Punica's and S-LoRA's kernels in plain
PyTorch (batched matmuls with a per-row gather did the same but left oneDNN a new primitive, and
memory, for every batch shape). The extra work grows with the adapters attached (k x r columns
against the layer's own width: 8 adapters of r=8 on flan-t5-small's 512 add 12% per GEMM pair). PEFT has no such path; variants (DoRA), LoRA biases, dropout while training, beam
batches and embeddings keep PEFT's own. The stacks are rebuilt when adapters change
(`forget_stacks`, called by the engine on attach and detach).
"""

from __future__ import annotations

import types

import torch

_STACK = "_loraqa_mixed_stack"


def _stack(layer):
    """(adapter -> slot, A [k*r, in], B [out, k*r]) of a LoRA layer, every adapter's rank padded
    to the largest r, or None when some adapter needs PEFT's own path."""
    cached = getattr(layer, _STACK, None)
    if cached is not None:
        return cached
    names = list(layer.lora_A.keys())
    if not names or any(n in layer.lora_variant or layer.lora_B[n].bias is not None for n in names):
        return None
    weights_a = [layer.lora_A[n].weight for n in names]
    weights_b = [layer.lora_B[n].weight * layer.scaling[n] for n in names]
    rank = max(w.shape[0] for w in weights_a)
    dtype, device = weights_a[0].dtype, weights_a[0].device
    a = torch.zeros(len(names) * rank, layer.in_features, dtype=dtype, device=device)
    b = torch.zeros(layer.out_features, len(names) * rank, dtype=dtype, device=device)
    for i, (wa, wb) in enumerate(zip(weights_a, weights_b)):
        a[i * rank : i * rank + wa.shape[0]] = wa.detach()
        b[:, i * rank : i * rank + wb.shape[1]] = wb.detach()
    stack: tuple[dict[str, int], int, torch.Tensor, torch.Tensor, dict] = (
        {n: i for i, n in enumerate(names)},
        rank,
        a,
        b,
        {},
    )
    setattr(layer, _STACK, stack)
    return stack


def _gathered_mixed_forward(self, x, *args, adapter_names, **kwargs):
    # PEFT passes its variants' keywords (aLoRA offsets, ...) along, unset for plain LoRA
    plain = not args and all(v is None for v in kwargs.values())
    stack = _stack(self) if plain and not self.training and x.shape[0] == len(adapter_names) else None
    if stack is None:
        return type(self)._mixed_batch_forward(self, x, *args, adapter_names=adapter_names, **kwargs)
    slots, rank, a, b, masks = stack
    key = tuple(adapter_names)
    mask = masks.get(key)
    if mask is None:  # one generate() call asks every layer with the same names
        if len(masks) > 64:
            masks.clear()
        mask = torch.zeros(len(adapter_names), 1, len(slots), 1, dtype=a.dtype, device=a.device)
        for row, name in enumerate(adapter_names):
            if name in slots:  # else no update: __base__, or an adapter this layer does not adapt
                mask[row, 0, slots[name], 0] = 1
        masks[key] = mask
    result = self.base_layer(x)
    flat = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype)
    # every adapter's low-rank projection in one GEMM, each row keeping only its own adapter's
    low = torch.nn.functional.linear(flat, a).view(flat.shape[0], flat.shape[1], len(slots), rank) * mask
    low = low.reshape(-1, len(slots) * rank)
    if result.dtype == low.dtype and result.is_contiguous():
        # added in place by the GEMM (the base layer's output is a fresh tensor): no second
        # activation-sized tensor, which PEFT's in-place indexed add does not make either
        result.view(-1, result.shape[-1]).addmm_(low, b.t())
        return result
    return result + (low @ b.t()).reshape(result.shape).to(result.dtype)


def use_gathered_mixed_batches(peft_model) -> int:
    """Route every LoRA linear layer's mixed batches through `_gathered_mixed_forward`; returns
    how many layers. Idempotent: call after each adapter is attached."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    patched = 0
    for module in peft_model.modules():
        if type(module) is LoraLinear:
            module._mixed_batch_forward = types.MethodType(_gathered_mixed_forward, module)  # type: ignore[method-assign]  # the patch itself
            patched += 1
    forget_stacks(peft_model)
    return patched


def forget_stacks(model) -> None:
    """Drop every layer's stacked weights (the adapters changed)."""
    for module in model.modules():
        if hasattr(module, _STACK):
            delattr(module, _STACK)

"""Training-time replacements for library code paths that cost more than their arithmetic.

On a CPU (and on small GPUs at flan-t5-small's width) a LoRA step over T5 is dominated by
element-wise passes over the activations, not by the matrix multiplies: a profile of the
default preset showed multiplies and adds taking as long as the GEMMs. Each replacement
here computes the same function with fewer passes; tests check the outputs and gradients
against the library's own forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def use_fused_gelu(model) -> int:
    """Swap transformers' `gelu_new` (a Python formula: seven element-wise ops, each kept for
    backward) for PyTorch's one-kernel tanh GELU, the same formula (transformers documents
    them as equal up to rounding). Returns how many activations were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = GELUTanh()
            swapped += 1
    return swapped


def _fused_rms_norm(self, hidden_states):
    """T5LayerNorm as one kernel: T5's version makes five passes (fp32 copy, square, mean, scale,
    cast back) and keeps their intermediates for backward; F.rms_norm computes the same thing
    with fp32 accumulation."""
    if hidden_states.dtype != self.weight.dtype:  # T5 promotes to fp32 here: keep its path
        return type(self).forward(self, hidden_states)
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), self.weight, self.variance_epsilon)


def use_fused_rms_norm(model) -> int:
    """Route T5-family layer norms through `_fused_rms_norm`. Returns how many."""
    patched = 0
    for module in model.modules():
        if type(module).__name__ in ("T5LayerNorm", "MT5LayerNorm", "UMT5LayerNorm"):
            module.forward = types.MethodType(_fused_rms_norm, module)
            patched += 1
    return patched


def _plain_lora_adapter(layer, x, args, kwargs) -> str | None:
    """The one adapter a call runs through when the fast path applies, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or not isinstance(x, torch.Tensor):
        return None
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in layer.lora_variant:
        return None
    if layer.lora_B[active[0]].bias is not None:  # PEFT's lora_bias
        return None
    if getattr(layer, "fan_in_fan_out", False):  # Conv1D-style transposed weights
        return None
    return active[0]


def _fused_lora_forward(self, x, *args, **kwargs):
    """base(x) + scaling * B(A(dropout(x))) with the scaling folded into B's (tiny) weight and
    the sum done by the GEMM's accumulate (addmm): PEFT's forward makes two extra full-size
    passes per adapted layer (multiply by scaling, add to the base output) and their backward."""
    name = _plain_lora_adapter(self, x, args, kwargs)
    if name is None:  # DoRA, several adapters, mixed batches, merged weights: PEFT's own path
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    low_rank = F.linear(self.lora_dropout[name](x), self.lora_A[name].weight)
    scaled_b = self.lora_B[name].weight * self.scaling[name]
    out = torch.addmm(result.reshape(-1, result.shape[-1]), low_rank.reshape(-1, low_rank.shape[-1]), scaled_b.t())
    return out.view(result.shape)


def use_fused_lora(peft_model) -> int:
    """Route every LoRA linear layer through `_fused_lora_forward`. Returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    patched = 0
    for module in peft_model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_fused_lora_forward, module)  # type: ignore[method-assign]  # the patch itself
            patched += 1
    return patched


def keep_input_dtype(peft_model) -> None:
    """Stop PEFT copying every adapted layer's input to the adapter's dtype.

    PEFT keeps adapter weights in fp32 over a bf16 base and casts each input up to match: a full
    fp32 copy of the activations per adapted layer (7 per block by default), kept for backward,
    which autocast then casts straight back to bf16 for the matmul. Measured on CPU: casts were
    18% of a default-preset step. Under autocast (bf16 training) and in fp32 runs the input
    needs no cast; inference casts the whole model to one dtype first.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False  # type: ignore[attr-defined]  # PEFT sets it in LoraLayer.__init__


def speed_up_training(peft_model) -> None:
    """All of the above, for a model about to be trained (inference keeps the library paths)."""
    use_fused_gelu(peft_model)
    use_fused_rms_norm(peft_model)
    use_fused_lora(peft_model)
    keep_input_dtype(peft_model)

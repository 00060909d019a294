"""The training fast paths (fused LoRA, GELU, RMS norm, attention) compute what the library computes.

If one of them drifted, an adapter trained with loraqa would differ from one trained with plain
PEFT + transformers on the same data: these tests compare losses and every LoRA gradient in fp32.
"""

from __future__ import annotations

import copy

import pytest
import torch

from loraqa.config import load_config
from loraqa.modeling import attention, fused
from loraqa.modeling.loading import configure_base
from loraqa.modeling.lora import add_lora


def _lora_model(attention_kind: str, fast: bool, dropout: float = 0.0):
    from loraqa.diagnostics.synthetic import build_t5

    cfg = load_config("default")
    cfg.lora.dropout = 0.0
    model = build_t5("tiny", vocab_size=300, dropout=dropout)
    configure_base(model, dropout, attention_kind, "cpu")
    peft_model = add_lora(model, cfg.lora, gradient_checkpointing=False)
    if not fast:  # undo every replacement: the library's own forward everywhere
        for module in peft_model.modules():
            module.__dict__.pop("forward", None)
            if hasattr(module, "act"):
                from transformers.activations import NewGELUActivation

                module.act = NewGELUActivation()
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give the adapter something to say
            torch.nn.init.normal_(p, std=0.05)
    return peft_model


def _loss_and_grads(model, batch):
    model.train()
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 300, (4, 23), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # padding: the mask must reach every layer
    mask[3, 7:] = 0
    labels = torch.randint(2, 300, (4, 6), generator=g)
    labels[2, 4:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_fast_paths_match_library_loss_and_gradients(batch):
    library = _lora_model("eager", fast=False)
    fast = _lora_model("fused", fast=True)
    assert fused.use_fused_lora(fast) > 0 and fast.base_model.model.config._attn_implementation == attention.NAME
    loss_lib, grads_lib = _loss_and_grads(library, batch)
    loss_fast, grads_fast = _loss_and_grads(fast, batch)
    assert loss_fast == pytest.approx(loss_lib, rel=1e-5)
    assert grads_lib.keys() == grads_fast.keys() and any("lora_A" in n for n in grads_lib)
    for name, g in grads_lib.items():
        torch.testing.assert_close(grads_fast[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_fused_attention_follows_each_new_mask(batch):
    """The bias+mask sum is shared across layers of one forward; a new batch must not reuse it."""
    library = _lora_model("eager", fast=False)
    fast = _lora_model("fused", fast=True)
    other = copy.deepcopy(batch)
    other["attention_mask"][0, 5:] = 0
    for b in (batch, other, batch):
        with torch.no_grad():
            library.eval(), fast.eval()
            torch.testing.assert_close(fast(**b).logits, library(**b).logits, rtol=1e-4, atol=1e-5)


def test_fused_lora_defers_to_peft_for_mixed_adapter_batches(batch):
    """Per-row adapters (the server's mixed batches) take PEFT's own path, not the fast one."""
    fast = _lora_model("fused", fast=True)
    fast.eval()
    names = ["default", "__base__", "default", "__base__"]
    with torch.no_grad():
        mixed = fast(**batch, adapter_names=names).logits
        adapted = fast(**batch).logits
        with fast.disable_adapter():
            plain = fast(**batch).logits
    torch.testing.assert_close(mixed[0], adapted[0])
    torch.testing.assert_close(mixed[1], plain[1])
    assert not torch.allclose(adapted[1], plain[1])


def test_bf16_training_keeps_adapter_input_in_bf16():
    """PEFT's input upcast (a full fp32 copy of each adapted input) is off for training."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = _lora_model("fused", fast=True)
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)

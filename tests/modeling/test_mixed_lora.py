"""Mixed-adapter batches through stacked weights (modeling/mixed_lora.py) compute what PEFT's own
mixed-batch path computes: with adapters of different ranks, rows without an adapter, and after
adapters come and go. If they did not, a served request would get another adapter's answer."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def model():
    from peft import LoraConfig, TaskType, get_peft_model

    from loraqa.diagnostics.synthetic import build_t5

    torch.manual_seed(0)
    base = build_t5("tiny", vocab_size=300, dropout=0.0).eval()
    peft = get_peft_model(
        base,
        LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q", "v"]
        ),
        adapter_name="small",
    )
    peft.add_adapter(
        "large",
        LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=32, init_lora_weights=False, target_modules=["q", "v", "o"]
        ),
    )
    return peft.eval()


def layers(model):
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules() if type(m) is Linear]


def test_each_row_goes_through_its_own_adapter_as_in_peft(model):
    from loraqa.modeling.mixed_lora import _gathered_mixed_forward, forget_stacks

    forget_stacks(model)
    names = ["large", "__base__", "small", "large", "small"]
    checked = 0
    for layer in layers(model):
        x = torch.randn(len(names), 7, layer.in_features)
        want = type(layer)._mixed_batch_forward(layer, x, adapter_names=names)
        got = _gathered_mixed_forward(layer, x, adapter_names=names, alora_offsets=None)
        assert torch.allclose(got, want, atol=1e-5), layer
        assert getattr(layer, "_loraqa_mixed_stack", None) is not None  # the stacked path ran, not PEFT's
        checked += 1
    assert checked > 0  # the 'o' layers hold only 'large': its rows of 'small' get no update there


def test_generation_with_mixed_adapters_gives_each_adapters_own_tokens(model):
    from loraqa.modeling.mixed_lora import use_gathered_mixed_batches

    assert use_gathered_mixed_batches(model) == len(layers(model))
    ids = torch.randint(2, 300, (3, 12))
    alone = {}
    for name in ("small", "large"):
        model.set_adapter(name)
        alone[name] = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    with model.disable_adapter():
        alone["__base__"] = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    names = ["large", "__base__", "small"]
    mixed = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, adapter_names=names)
    for row, name in enumerate(names):
        assert mixed[row].tolist() == alone[name][row].tolist(), name


def test_stacks_follow_adapters_that_come_and_go(model):
    """A new adapter under an old name must not answer with the old one's stacked weights."""
    from peft import LoraConfig, TaskType

    from loraqa.modeling.mixed_lora import _gathered_mixed_forward, use_gathered_mixed_batches

    layer = layers(model)[0]
    x = torch.randn(2, 3, layer.in_features)
    before = _gathered_mixed_forward(layer, x, adapter_names=["small", "small"])
    model.delete_adapter("small")
    model.add_adapter(
        "small",
        LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q", "v"]
        ),
    )
    use_gathered_mixed_batches(model)  # what the engine does after every attach
    after = _gathered_mixed_forward(layer, x, adapter_names=["small", "small"])
    assert not torch.allclose(before, after)
    assert torch.allclose(
        after, type(layer)._mixed_batch_forward(layer, x, adapter_names=["small", "small"]), atol=1e-5
    )

"""Peak-memory estimate for LoRA training of a T5-style encoder-decoder.

An analytic count (weights, LoRA optimizer state, saved activations, logits) rather than a
trial run, so `loraqa doctor` can answer before any download. The activation constants are
per-token counts of the tensors autograd keeps for one T5 block; they are approximate and
err on the high side.
"""

from __future__ import annotations

from loraqa.diagnostics.architectures import KNOWN_ARCHITECTURES, Arch, arch_from_config
from loraqa.hub import looks_like_path
from loraqa.modeling.loading import load_config_only


def architecture_of(name: str) -> Arch | None:
    if name in KNOWN_ARCHITECTURES and not looks_like_path(name):
        return KNOWN_ARCHITECTURES[name]
    try:
        cfg = load_config_only(name)
        return arch_from_config(cfg) if getattr(cfg, "model_type", "") in ("t5", "mt5", "umt5") else None
    except Exception:  # noqa: BLE001 - no config reachable: the caller says so
        return None


def lora_parameters(arch: Arch, targets: list[str], r: int) -> int:
    d, inner, ff = arch.d_model, arch.inner, arch.d_ff
    shape = {
        "q": (d, inner),
        "k": (d, inner),
        "v": (d, inner),
        "o": (inner, d),
        "wi": (d, ff),
        "wi_0": (d, ff),
        "wi_1": (d, ff),
        "wo": (ff, d),
    }
    per_block_attn = {t: r * sum(shape[t]) for t in targets if t in ("q", "k", "v", "o")}
    per_block_ff = {t: r * sum(shape[t]) for t in targets if t in ("wi", "wi_0", "wi_1", "wo")}
    attn = sum(per_block_attn.values())
    ffn = sum(per_block_ff.values())
    return arch.num_layers * (attn + ffn) + arch.num_decoder_layers * (2 * attn + ffn)


def estimate_training_memory(arch: Arch, cfg, dtype: str, device: str) -> dict:
    GiB = 2**30
    B = cfg.train.batch_size
    S = cfg.data.max_source_length
    T = cfg.data.max_target_length
    d, ff, H = arch.d_model, arch.d_ff, arch.num_heads
    act_bytes = 2 if dtype == "bf16" else 4
    P = arch.parameters()
    quant = cfg.model.quantization
    # the frozen base is stored in the training dtype (bf16 runs keep no fp32 copy)
    weight_bytes = {"8bit": 1.2, "4bit": 0.65}.get(quant, 2.0 if dtype == "bf16" else 4.0)
    weights = P * weight_bytes
    lora = lora_parameters(arch, cfg.lora.target_modules, cfg.lora.r)
    optimizer = lora * (4 + 4 + 8)  # weights, grads, Adam moments (fp32)

    enc_layer = B * S * (10 * d + 4 * ff) * act_bytes + B * H * S * S * (2 * act_bytes + 1)
    dec_layer = B * T * (16 * d + 4 * ff) * act_bytes + B * H * (T * T + T * S) * (2 * act_bytes + 1)
    if cfg.train.gradient_checkpointing:
        activations = (B * S * d * arch.num_layers + B * T * d * arch.num_decoder_layers) * act_bytes + max(
            enc_layer, dec_layer
        )
    else:
        activations = enc_layer * arch.num_layers + dec_layer * arch.num_decoder_layers
    logits = 3 * B * T * arch.vocab_size * 4
    # CUDA context; on CPU the interpreter, torch, datasets and the Trainer, plus allocator slack
    # (calibrated against `loraqa bench` peak RSS: default preset 2.8-2.9 GiB measured, 3.1
    # estimated; with batch 8 x accumulation 2 (the preset now), 2.3-2.4 measured, 2.2 estimated)
    runtime = 0.45 * GiB if device == "cuda" else 1.2 * GiB
    total = weights + optimizer + activations + logits + runtime
    advice = []
    if not cfg.train.gradient_checkpointing:
        advice.append("--set train.gradient_checkpointing=true (recompute activations: about a third slower)")
    if B > 1:
        advice.append(
            f"--set train.batch_size={max(1, B // 2)} --set train.grad_accum={cfg.train.grad_accum * 2} "
            "(same effective batch)"
        )
    if S > 256:
        advice.append("--set data.max_source_length=256 (passages are cut around the answer)")
    if quant == "none" and device == "cuda":
        advice.append("--set model.quantization=8bit (frozen base in 8-bit, CUDA only)")
    return {
        "parameters": P,
        "lora_parameters": lora,
        "weights_gb": weights / GiB,
        "optimizer_gb": optimizer / GiB,
        "activations_gb": activations / GiB,
        "logits_gb": logits / GiB,
        "runtime_gb": runtime / GiB,
        "total_gb": total / GiB,
        "advice": advice,
    }

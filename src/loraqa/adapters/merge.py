"""`loraqa merge`: fold an adapter into its base weights and write a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from loraqa.adapters.folder import ADAPTER_CONFIG_NAME, AdapterRef, resolve_adapter, save_model_folder
from loraqa.errors import LoraqaError, option
from loraqa.modeling.files import load_tokenizer, refuse_pickle
from loraqa.modeling.loading import load_base_model, load_seq2seq_config


def model_card(base: str, adapter: Path, cfg) -> str:
    lora = cfg.lora
    return f"""---
library_name: transformers
base_model: {base}
tags: [loraqa, lora, question-answering, text2text-generation]
---

# {adapter.parent.name if adapter.name == "adapter" else adapter.name} (merged)

A LoRA adapter trained with loraqa, folded into the weights of `{base}`. It loads with plain
`AutoModelForSeq2SeqLM.from_pretrained` and the transformers `pipeline`; no PEFT needed.

- base model: `{base}`
- adapter: `{adapter}` (LoRA r={lora.r}, alpha={lora.alpha}, targets {", ".join(lora.target_modules)})
- training data: `{cfg.data.source}` ({cfg.data.num_samples or "all"} examples, seed {cfg.data.seed})
- prompt template (`{ADAPTER_CONFIG_NAME}`, data.template): `{cfg.data.template}`

Ask questions in the template the adapter was trained with, e.g. with `loraqa predict`.
"""


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise LoraqaError(
            f"{out} already exists and is not empty; pass {option('overwrite')} or choose another {option('output')}"
        )


def merged_model(ref: AdapterRef, base_model: str | None = None, allow_pickle: bool = False):
    """(the base with the adapter folded into its weights, the adapter's tokenizer, the base's name)."""
    if ref.config.model.quantization != "none":
        raise LoraqaError(
            "this adapter was trained on a quantized base; merging into 8/4-bit weights loses precision. "
            f"Merge onto the full-precision base with {option('model')}"
        )
    base = base_model or ref.config.model.name
    config = load_seq2seq_config(base)  # not an encoder-decoder: refused before the adapter is read
    refuse_pickle(ref.adapter_dir, "adapter", allow_pickle, any_present=True)
    # fp32 on the CPU: merging is a one-off, and exact weights matter more than speed here
    model = load_base_model(base, "fp32", "cpu", allow_pickle=allow_pickle, config=config)
    try:
        model = PeftModel.from_pretrained(model, str(ref.adapter_dir))
    except Exception as exc:  # noqa: BLE001 - PEFT raises many types for an adapter that does not fit
        raise LoraqaError(
            f"the adapter in {ref.adapter_dir} does not fit the base model {base} "
            f"({str(exc).splitlines()[0][:160]}); pass its base with {option('model')}"
        ) from None
    return model.merge_and_unload(), load_tokenizer(str(ref.adapter_dir)), base


def merge(
    adapter: str, output: str, base_model: str | None = None, overwrite: bool = False, allow_pickle: bool = False
) -> Path:
    """Fold an adapter into its base model's weights: a plain transformers model folder (with
    loraqa's config and a model card) that `from_pretrained` and `pipeline()` load without PEFT.

    Args:
        adapter: A run directory or adapter folder.
        output: The folder to write (written aside and swapped in whole).
        base_model: The base to merge into (default: the one the adapter was trained on).
        overwrite: Replace what the output folder holds.
        allow_pickle: Accept pickle weight files.

    Returns:
        The output folder.

    Raises:
        LoraqaError: Not an adapter, a quantized base, an output in the way.
    """
    ref = resolve_adapter(adapter)
    out = Path(output)
    check_output(out, overwrite)
    merged, tokenizer, base = merged_model(ref, base_model, allow_pickle)
    # the prompt template travels with the merged model, so eval/predict can still render questions
    save_model_folder(
        merged, tokenizer, out, ref.config, extra_files={"README.md": model_card(base, ref.adapter_dir, ref.config)}
    )
    return out

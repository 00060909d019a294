"""`loraqa export RUN --format ctranslate2`: the adapter merged into its base, converted for CTranslate2.

CTranslate2 cannot apply LoRA at run time (OpenNMT/CTranslate2 #1186), so the adapter is folded
into the base first (as `loraqa merge` does), then converted with CTranslate2's own converter,
quantized (int8 by default). The folder also holds the tokenizer, loraqa_config.yaml (prompt
template, window, no-answer text), the adapter's calibration and domain profile, the run's
held-out split, and a model card: `loraqa predict/eval/serve --engine ctranslate2` read it as
they read an adapter.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from loraqa.adapters.calibration import CALIBRATION_NAME
from loraqa.adapters.folder import ADAPTER_CONFIG_NAME, resolve_adapter
from loraqa.adapters.merge import check_output, merged_model
from loraqa.config import dump_config
from loraqa.domain_profile import DOMAIN_PROFILE_NAME
from loraqa.errors import UsageError, option
from loraqa.optional import require
from loraqa.output_files import replace_dir, write_atomic

QUANTIZATIONS = ("int8", "int8_float32", "int8_bfloat16", "bfloat16", "float16", "float32")


def converter_class():
    """CTranslate2's converter, told the truth about T5's output scaling.

    transformers 5 forces `T5Config.tie_word_embeddings=True` and keeps the checkpoint's own value
    in `scale_decoder_outputs`; the converter reads the former and would scale flan-t5's decoder
    outputs by d_model**-0.5, which flan-t5 (untied lm_head) does not do: every score would be off
    (seen here: -5.4 instead of -3.0 per token)."""
    converters = require("ctranslate2", "loraqa export --format ctranslate2").converters

    class Converter(converters.TransformersConverter):  # type: ignore[name-defined]  # a module found at run time
        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            if hasattr(model.config, "scale_decoder_outputs"):
                model.config.tie_word_embeddings = bool(model.config.scale_decoder_outputs)
            return model

    return Converter


def model_card(ref, base: str, quantization: str) -> str:
    return f"""---
library_name: ctranslate2
base_model: {base}
tags: [loraqa, lora, question-answering, ctranslate2]
---

# {ref.adapter_dir.parent.name if ref.adapter_dir.name == "adapter" else ref.adapter_dir.name} (CTranslate2, {quantization})

A LoRA adapter trained with loraqa, merged into `{base}` and converted for CTranslate2
(`ctranslate2.Translator`), weights in {quantization}.

- adapter: `{ref.adapter_dir}` (LoRA r={ref.config.lora.r}, targets {", ".join(ref.config.lora.target_modules)})
- prompt template (`{ADAPTER_CONFIG_NAME}`, data.template): `{ref.config.data.template}`

Answer with `loraqa predict --engine ctranslate2 --adapter THIS_FOLDER` or serve it with
`loraqa serve --engine ctranslate2 -a NAME=THIS_FOLDER`: same prompts, windows, scores and offsets
as the PyTorch engine.
"""


def export(
    adapter: str,
    output: str,
    fmt: str = "ctranslate2",
    quantization: str = "int8",
    base_model: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    if fmt != "ctranslate2":
        raise UsageError(f"{option('format')} must be ctranslate2, got '{fmt}'")
    if quantization not in QUANTIZATIONS:
        raise UsageError(f"{option('quantization')} must be one of {', '.join(QUANTIZATIONS)}, got '{quantization}'")
    converter = converter_class()
    ref = resolve_adapter(adapter)
    out = Path(output)
    check_output(out, overwrite)
    merged, tokenizer, base = merged_model(ref, base_model, allow_pickle)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".loraqa-export-", dir=out.parent) as tmp:  # same disk: swapped in whole
        merged_dir, converted = Path(tmp) / "merged", Path(tmp) / "converted"
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        converter(str(merged_dir)).convert(str(converted), quantization=quantization, force=True)
        tokenizer.save_pretrained(converted)
        write_atomic(converted / ADAPTER_CONFIG_NAME, dump_config(ref.config))
        write_atomic(converted / "README.md", model_card(ref, base, quantization))
        for name in (CALIBRATION_NAME, DOMAIN_PROFILE_NAME):
            if (ref.adapter_dir / name).is_file():
                shutil.copy(ref.adapter_dir / name, converted / name)
        if ref.run_dir is not None and (ref.run_dir / "split.json").is_file():
            shutil.copy(ref.run_dir / "split.json", converted / "split.json")
        replace_dir(converted, out)
    return out

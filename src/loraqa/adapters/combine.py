"""`loraqa combine`: one adapter made of several, by PEFT's own `add_weighted_adapter`.

The result is an ordinary adapter folder (PEFT files, tokenizer, loraqa_config.yaml, a domain
profile), so predict, eval, serve, merge, export and `auto` routing take it like any other. Its
parents, weights and method are written to loraqa_combination.json, to its config's
data.source, and to its model card. What PEFT would refuse deep inside (or silently get wrong)
is refused first, in one line: different base models, target modules, prompt templates or
tasks; ranks that differ for the methods that need one rank; weights that do not match.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel

from loraqa.adapters.folder import ADAPTER_CONFIG_NAME, AdapterRef, resolve_adapter
from loraqa.adapters.merge import check_output
from loraqa.config import dump_config
from loraqa.domain_profile import DOMAIN_PROFILE_NAME, DomainProfile
from loraqa.errors import LoraqaError, UsageError, option
from loraqa.modeling.files import load_tokenizer, refuse_pickle
from loraqa.modeling.loading import load_base_model, load_seq2seq_config
from loraqa.output_files import replace_dir, write_json

COMBINATION_NAME = "loraqa_combination.json"
# PEFT's combination types (LoraModel.add_weighted_adapter, peft 0.21)
METHODS = (
    "linear",
    "ties",
    "dare_linear",
    "dare_ties",
    "svd",
    "cat",
    "ties_svd",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
# those that add the parents' A and B matrices in place, so every parent needs the same rank
SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
# those that prune to a density (the share of each parent's weights kept)
PRUNING = (
    "ties",
    "dare_linear",
    "dare_ties",
    "ties_svd",
    "dare_linear_svd",
    "dare_ties_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
COMBINED = "combined"


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _peft_config(ref: AdapterRef) -> dict:
    """The adapter's PEFT config, its fields the combination reads checked (a wrong type would
    otherwise be a traceback deep inside PEFT)."""
    path = ref.adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raise LoraqaError(f"{path} cannot be read; train the adapter again") from None
    problem = None
    if not isinstance(cfg, dict):
        problem = "is not a JSON object"
    elif not (_whole(cfg.get("r")) and cfg["r"] >= 1):
        problem = f"has r = {str(cfg.get('r'))[:20]!r}, not a rank (a whole number >= 1)"
    elif not isinstance(cfg.get("lora_alpha", 8), (int, float)) or isinstance(cfg.get("lora_alpha"), bool):
        problem = "has a lora_alpha that is not a number"
    elif not all(isinstance(cfg.get(k) or {}, dict) for k in ("rank_pattern", "alpha_pattern")) or not all(
        _whole(r) and r >= 1 for r in (cfg.get("rank_pattern") or {}).values()
    ):
        problem = "has a rank_pattern or alpha_pattern that is not a mapping of layer names to numbers"
    else:
        targets = cfg.get("target_modules")
        if not (
            isinstance(targets, str)
            or (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets))
        ):
            problem = "has target_modules that are not layer names"
    if problem is not None:
        raise LoraqaError(f"{path} {problem}; it is not a LoRA adapter loraqa can combine")
    return cfg


def check_weights(ref: AdapterRef, name: str) -> None:
    """The parent's weights: a readable safetensors file holding LoRA tensors, every value finite
    (a parent with NaN weights would make an all-NaN combination, silently)."""
    from safetensors import SafetensorError, safe_open

    path = ref.adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return  # pickle weights (--allow-pickle): PEFT reads them; nothing to open safely here
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            lora = [k for k in keys if "lora_" in k]
            if not lora:
                raise LoraqaError(f"{name}: {path.name} holds no LoRA weights; it is not an adapter to combine")
            for key in keys:
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                    raise LoraqaError(
                        f"{name}: {path.name} holds NaN or infinite weights ({key}); the adapter "
                        "diverged in training: retrain it (a lower learning rate) before combining"
                    )
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LoraqaError(
            f"{name}: {path.name} is not a readable safetensors file ({str(exc).splitlines()[0][:100]}); is it damaged?"
        ) from None


def _rank(peft_cfg: dict) -> int:
    return max([peft_cfg["r"], *(peft_cfg.get("rank_pattern") or {}).values()])


def check_parents(
    refs: list[AdapterRef],
    names: list[str],
    weights: list[float],
    method: str,
    density: float | None,
    base_model: str | None,
) -> list[dict]:
    """Everything PEFT needs to combine these adapters; their PEFT configs."""
    if len(refs) < 2:
        raise UsageError("combine needs two adapters or more")
    if method not in METHODS:
        raise UsageError(f"unknown combination method {method!r}; PEFT offers {', '.join(METHODS)}")
    if len(weights) != len(refs):
        raise UsageError(f"{len(weights)} weights for {len(refs)} adapters; give one weight per adapter")
    if not all(math.isfinite(w) for w in weights):
        raise UsageError("the weights must be finite numbers")
    if density is not None and method not in PRUNING:
        raise UsageError(f"--density prunes parents for {', '.join(PRUNING)}; {method} does not use it")
    if density is not None and not 0 < density <= 1:
        raise UsageError(f"--density is the share of weights kept: between 0 (excluded) and 1, got {density}")
    for ref, name in zip(refs, names):
        if ref.kind != "lora":
            raise UsageError(f"{name} is a CTranslate2 export; combine the LoRA adapters it was exported from")
        if ref.config.model.quantization != "none":
            raise UsageError(f"{name} was trained on a quantized base; combine adapters of a full-precision base")
    peft = [_peft_config(r) for r in refs]
    bases = {base_model or r.config.model.name for r in refs}
    if len(bases) > 1:
        raise UsageError(
            f"the adapters sit on different base models ({', '.join(sorted(bases))}); only adapters "
            "of one base model combine"
        )
    targets = {
        tuple(sorted(p.get("target_modules") or []))
        if not isinstance(p.get("target_modules"), str)
        else p["target_modules"]
        for p in peft
    }
    if len(targets) > 1:
        raise UsageError(
            f"the adapters adapt different layers ({' vs '.join(map(str, sorted(targets)))}); train them "
            "with the same lora.target_modules"
        )
    for key, what in (("template", "prompt templates"), ("task", "tasks")):
        values = {getattr(r.config.data, key) for r in refs}
        if len(values) > 1:
            raise UsageError(
                f"the adapters were trained with different {what} ({', '.join(sorted(values))}); "
                "a combination answers in one"
            )
    ranks = [_rank(p) for p in peft]
    if method in SAME_RANK and len(set(ranks)) > 1:
        raise UsageError(
            f"{method} adds the adapters' matrices, which needs one rank; these have ranks "
            f"{', '.join(map(str, ranks))}: use svd or cat, or train them with the same lora.r"
        )
    if any(p.get("use_dora") for p in peft):
        raise UsageError("PEFT cannot combine DoRA adapters (lora.use_dora)")
    for ref, name in zip(refs, names):
        check_weights(ref, name)
    return peft


def combined_profile(refs: list[AdapterRef], weights: list[float], source: str) -> DomainProfile | None:
    """The weighted union of the parents' domain profiles (None when a parent has none)."""
    read = [DomainProfile.read(r.adapter_dir) for r in refs]
    profiles = [p for p in read if p is not None]
    if len(profiles) < len(read):
        return None
    return DomainProfile.combined(list(zip(profiles, weights)), source)


def model_card(names: list[str], weights: list[float], method: str, density: float | None, base: str) -> str:
    parents = "\n".join(f"- `{n}` x {w:g}" for n, w in zip(names, weights))
    return f"""---
library_name: peft
base_model: {base}
tags: [loraqa, lora, question-answering, text2text-generation, adapter-combination]
---

# A combination of {len(names)} loraqa adapters

Made by `loraqa combine` with PEFT's `add_weighted_adapter` (combination_type `{method}`
{f"density {density:g}" if density is not None else ""}) from:

{parents}

on the base model `{base}`. Its parents' calibrations do not carry over: run `loraqa eval` on it
to fit its no-answer threshold. Parents, weights and method: `{COMBINATION_NAME}`.
"""


@dataclass
class Blend:
    """How adapters are combined: PEFT's combination type, each adapter's weight (default: equal
    shares), the share of weights kept by the pruning methods, and the seed DARE drops them by."""

    method: str = "linear"
    weights: list[float] | None = None
    density: float | None = None
    seed: int = 42


def combine(
    adapters: list[str],
    output: str,
    blend: Blend | None = None,
    base_model: str | None = None,
    overwrite: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Write a weighted combination of adapters of one base model, with PEFT's
    `add_weighted_adapter`, as one adapter folder (its domain profile the parents' union).

    Args:
        adapters: Two run directories or adapter folders or more.
        output: The adapter folder to write.
        blend: The method, weights, density and seed (Blend; default: linear, equal weights).
        base_model: Their base (default: the one the first was trained on).
        overwrite: Replace what the output folder holds.
        allow_pickle: Accept pickle weight files.

    Returns:
        The output folder.

    Raises:
        LoraqaError: Adapters of different bases, targets or templates, a method that does not
            fit their ranks, an output in the way.
    """
    blend = blend or Blend()
    weights, method, density, seed = blend.weights, blend.method, blend.density, blend.seed
    refs = [resolve_adapter(a) for a in adapters]
    weights = list(weights) if weights is not None else [1.0 / len(refs)] * len(refs)
    check_parents(refs, adapters, weights, method, density, base_model)
    out = Path(output)
    check_output(out, overwrite)
    base = base_model or refs[0].config.model.name
    config = load_seq2seq_config(base)
    for ref in refs:
        refuse_pickle(ref.adapter_dir, "adapter", allow_pickle, any_present=True)
    model = load_base_model(base, "fp32", "cpu", allow_pickle=allow_pickle, config=config)
    parents = [f"parent{i}" for i in range(len(refs))]
    try:
        model = PeftModel.from_pretrained(model, str(refs[0].adapter_dir), adapter_name=parents[0])
        for name, ref in zip(parents[1:], refs[1:]):
            model.load_adapter(str(ref.adapter_dir), adapter_name=name)
    except Exception as exc:  # noqa: BLE001 - PEFT raises many types for an adapter that does not fit
        raise LoraqaError(
            f"an adapter does not fit the base model {base} ({str(exc).splitlines()[0][:160]}); "
            f"pass their base with {option('model')}"
        ) from None
    torch.manual_seed(seed)  # DARE drops weights at random
    kwargs = {"density": density if density is not None else 0.5} if method in PRUNING else {}
    try:
        model.add_weighted_adapter(parents, weights, COMBINED, combination_type=method, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise LoraqaError(
            f"PEFT cannot combine these adapters with {method}: {str(exc).splitlines()[0][:200]}"
        ) from None
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    saved = tmp / "peft"
    model.save_pretrained(str(saved), selected_adapters=[COMBINED])
    folder = tmp / "adapter"
    shutil.move(str(saved / COMBINED), str(folder))  # PEFT saves a named adapter in a folder of that name
    load_tokenizer(str(refs[0].adapter_dir)).save_pretrained(str(folder))
    peft_cfg = json.loads((folder / "adapter_config.json").read_text())
    description = (
        f"combine({method}"
        + (f", density {kwargs['density']:g}" if kwargs else "")
        + "): "
        + ", ".join(f"{a} x {w:g}" for a, w in zip(adapters, weights))
    )
    cfg = copy.deepcopy(refs[0].config)
    cfg.model.name = base
    cfg.lora.r, cfg.lora.alpha = int(peft_cfg["r"]), int(peft_cfg["lora_alpha"])
    cfg.data.source = description
    (folder / ADAPTER_CONFIG_NAME).write_text(dump_config(cfg))
    write_json(
        folder / COMBINATION_NAME,
        {
            "method": method,
            "density": kwargs.get("density"),
            "seed": seed,
            "base_model": base,
            "parents": [
                {"adapter": str(Path(a).resolve()), "weight": w, "rank": _rank(_peft_config(r))}
                for a, w, r in zip(adapters, weights, refs)
            ],
        },
    )
    profile = combined_profile(refs, weights, description)
    if profile is not None:
        (folder / DOMAIN_PROFILE_NAME).write_text(profile.to_json())
    (folder / "README.md").write_text(model_card(adapters, weights, method, kwargs.get("density"), base))
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(folder, out)  # written aside and swapped in whole: nothing half-written loads
    shutil.rmtree(tmp, ignore_errors=True)
    return out

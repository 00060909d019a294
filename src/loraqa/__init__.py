"""loraqa: LoRA adapters for encoder-decoder question answering.

The public Python API, loaded on first use (PEP 562 module `__getattr__`) so that `import loraqa`
and the command line start without importing torch:

    from loraqa import load_config, train, Answerer, run_eval, EvalOptions, score_files, merge

    cfg = load_config("default", sets=["train.max_steps=100"], overrides={"data": {"source": "my.jsonl"}})
    result = train(cfg, output="runs/mine")                  # TrainResult(run_dir, model, metrics)
    answerer = Answerer({"mine": "runs/mine"})               # one base model, any number of adapters
    answerer.answer([{"question": "...", "context": "...", "adapter": "mine"}])
    run_eval("runs/mine", EvalOptions(baseline=True))        # EM/F1 of generated answers, and the base's
    score_files("dev-v1.1.json", "predictions.json")         # the official SQuAD scores of any file
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "Config": "loraqa.config",
    "load_config": "loraqa.config",
    "LoraqaError": "loraqa.errors",
    "UsageError": "loraqa.errors",
    "load_rows": "loraqa.data.loading",
    "train": "loraqa.training.train",
    "TrainResult": "loraqa.training.train",
    "Answerer": "loraqa.inference.answerer",
    "BASE": "loraqa.inference.answerer",
    "merge": "loraqa.adapters.merge",
    "run_eval": "loraqa.evaluation.eval_run",
    "EvalOptions": "loraqa.evaluation.eval_run",
    "score_files": "loraqa.evaluation.scoring",
    "score_rows": "loraqa.evaluation.scoring",
    "make_report": "loraqa.evaluation.report",
    "create_app": "loraqa.serving.app",
    "open_store": "loraqa.retrieval",
    "read_path": "loraqa.documents",
    "split_document": "loraqa.documents",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'loraqa' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)

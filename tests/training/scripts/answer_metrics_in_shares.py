"""Run under torchrun by tests/test_distributed.py: the Trainer's EM/F1 hook (AnswerMetrics) on
an adapter, with every process recording how many questions it answered itself."""

import json
import sys
from types import SimpleNamespace

from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from loraqa.adapters.folder import resolve_adapter
from loraqa.data.loading import load_rows
from loraqa.distributed import gather_object, is_main_process
from loraqa.training import callbacks

run, data, out = sys.argv[1:4]
ref = resolve_adapter(run)
tokenizer = AutoTokenizer.from_pretrained(ref.adapter_dir)
model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(ref.config.model.name), ref.adapter_dir)
answered = []
read_rows = callbacks.read_rows
callbacks.read_rows = lambda m, tok, rows, *a, **k: (answered.append(len(rows)), read_rows(m, tok, rows, *a, **k))[1]
metrics = callbacks.AnswerMetrics(load_rows(data), ref.config, tokenizer, autocast_bf16=False)
metrics.model = model
result = metrics(SimpleNamespace(predictions=[[5, 6]], label_ids=[[5, 7]]))
counts = gather_object([sum(answered)])
if is_main_process():
    with open(out, "w") as f:
        json.dump({"metrics": result, "answered_per_process": counts}, f)

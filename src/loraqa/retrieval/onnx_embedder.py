"""The embedder run by onnxruntime: passages in int8, queries in fp32.

The folder's transformer is exported to ONNX once per fingerprint (torch and transformers are
needed for that step only) and its layers fused by onnxruntime's transformer optimizer
(attention, layer norms and GELU each become one kernel). Passages run a copy whose weights are
int8 **per output channel** (per-tensor scales, onnxruntime's default, moved the vectors to a mean
cosine of 0.94 to fp32 on COVID-QA passages), except the MatMuls a GELU feeds; queries, one short
text each, run the fused fp32 model, so that a search's every score is not moved by its query's
rounding. Measured on COVID-QA, PolicyQA and FairytaleQA by benchmarks/domains.py against
sentence-transformers' fp32 and CTranslate2's int8 on the same passages. Both files are kept in
the embedder cache; searching then needs onnxruntime and tokenizers only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import platform
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from loraqa import optional
from loraqa.errors import LoraqaError
from loraqa.reporting import say
from loraqa.retrieval.embedder_models import TokenizedEmbedder, embedder_cache

# model types onnxruntime's optimizer fuses as BERT (their attention and layer norms are BERT's)
FUSED_AS_BERT = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert"}
MODEL_FILE = "model.onnx"
QUERY_FILE = "queries.onnx"
EXPORT = "onnx-int8-v3"  # in the cache folder's name: a change to what _export makes gets a new one


class ONNXEmbedder(TokenizedEmbedder):
    """The model's transformer as a fused, int8 onnxruntime session."""

    def __init__(self, name: str, folder: Path, threads: int = 0):
        ort = optional.require("onnxruntime", "the onnxruntime embedder")
        super().__init__(name, folder)
        model = exported(folder, self.fingerprint, name)
        self.workers = threads or min(4, os.cpu_count() or 1)
        # One text per call: dynamic int8 scales each call's activations as a whole, so in a batch
        # a passage's vector moved with its neighbours and their padding (the same text came out
        # at a cosine of 0.996 to itself, and COVID-QA's dense recall@5 fell 0.5 points further);
        # alone, a text always gets the same vector. A call that small is too little work to share
        # between threads (each layer's threads wait for each other), so passages run one thread
        # per call and one call per core at a time: 1.1-1.4x the passages/s of two threads per call.
        self.session = ort.InferenceSession(str(model), _options(ort, 1), providers=["CPUExecutionProvider"])
        # a query is one text that a searcher waits for: its call gets every thread
        self.queries = ort.InferenceSession(
            str(model.with_name(QUERY_FILE)), _options(ort, self.workers), providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.batch = 1

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.pooled(texts, self.hidden_states, self.workers)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.pooled(texts, lambda ids: self._run(self.queries, ids))

    def hidden_states(self, ids: list[list[int]]) -> np.ndarray:
        return self._run(self.session, ids)

    def _run(self, session, ids: list[list[int]]) -> np.ndarray:
        longest = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), longest), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        feed = {k: v for k, v in feed.items() if k in self.inputs}
        return np.asarray(session.run(None, feed)[0], np.float32)


def _options(ort, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings are about the export, not the user's input
    return options


def exported(folder: Path, fp: str, name: str = "") -> Path:
    """The folder's transformer as a fused int8 ONNX file, made once per fingerprint (name: the
    model as the user gave it, for the line that says so)."""
    seven_bit = not cpu_has_vnni()
    cache = embedder_cache() / (f"{fp}-{EXPORT}" + ("-7bit" if seven_bit else ""))
    if (cache / MODEL_FILE).is_file() and (cache / QUERY_FILE).is_file():
        return cache / MODEL_FILE
    optional.check("onnx", "exporting the embedder for onnxruntime")
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    say(f"exporting the embedder {name or folder.name} to int8 for onnxruntime (once for this model; about 10 s)")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        with _quiet():
            _export(folder, tmp, seven_bit)
        os.replace(tmp, cache)
    except Exception as exc:  # noqa: BLE001 - the exporter and the quantiser raise many types for a model they cannot take
        if (cache / MODEL_FILE).is_file():  # another process exported it meanwhile
            return cache / MODEL_FILE
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise LoraqaError(
            f"onnxruntime cannot take the embedder {name or folder.name} ({first}); "
            "use --embedder-engine ctranslate2 or sentence-transformers"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache / MODEL_FILE


def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies int8 with VNNI. x86 CPUs without it (AVX2 only, older
    AVX-512) add int8 products in 16 bits, which saturate with full 8-bit weights, and the
    vectors drift (onnxruntime's quantisation guide): there the weights are quantised to 7 bits
    (reduce_range). Other architectures' int8 kernels do not saturate this way. LORAQA_CPU_VNNI=0
    or 1 overrides what is detected (the tests check the 7-bit path with it)."""
    forced = os.environ.get("LORAQA_CPU_VNNI")
    if forced in ("0", "1"):
        return forced == "1"
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # not known: 7 bits are safe everywhere
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _after_gelu(model) -> list[str]:
    """The MatMuls fed by a GELU (each layer's feed-forward down-projection), kept in fp32: their
    inputs have a long tail that one dynamic int8 scale clips. Quantised too, COVID-QA's dense
    recall@5 was 0.6 points below fp32 (mean cosine 0.994); kept, 0.4 (0.997), for a quarter less
    speed."""
    gelu = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}
    made_by = {out: node.op_type for node in model.graph.node for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and (made_by.get(node.input[0]) in gelu or "act_fn" in node.input[0])
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's tracer warnings and the quantiser's advice go to Python's warnings and root
    logger: they speak of the export's internals, nothing the user can act on."""
    root = logging.getLogger()
    level, silence = root.level, logging.NullHandler()
    root.addHandler(silence)  # a handler of its own keeps logging.warning() from configuring stderr
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        root.removeHandler(silence)


def _export(folder: Path, into: Path, seven_bit: bool) -> None:
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoConfig, AutoModel

    from loraqa.modeling.files import without_progress_bars

    config = AutoConfig.from_pretrained(str(folder))
    with without_progress_bars():
        # eager attention: the pattern onnxruntime's optimizer recognises and fuses (the
        # scaled-dot-product export stays a chain of MatMul, Softmax and Where)
        model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    names = [
        n for n in ("input_ids", "attention_mask", "token_type_ids") if n in inspect.signature(model.forward).parameters
    ]

    class LastHiddenState(torch.nn.Module):
        # the exporter passes inputs by position; the model's forward takes them by name
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs))).last_hidden_state

    sample = torch.ones(2, 8, dtype=torch.long)
    plain = into / "plain.onnx"
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(),
            tuple(sample if n != "token_type_ids" else torch.zeros_like(sample) for n in names),
            str(plain),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    source = plain
    if getattr(config, "model_type", "") in FUSED_AS_BERT:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(
            str(plain),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        source = into / "fused.onnx"
        fused.save_model_to_file(str(source))
    quantize_dynamic(
        str(source),
        str(into / MODEL_FILE),
        per_channel=True,
        weight_type=QuantType.QInt8,
        reduce_range=seven_bit,
        nodes_to_exclude=_after_gelu(onnx.load(str(source), load_external_data=False)),
        # fused operators are outside ONNX's type inference; their outputs are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    os.replace(source, into / QUERY_FILE)
    for path in into.iterdir():
        if path.name not in (MODEL_FILE, QUERY_FILE):
            path.unlink()

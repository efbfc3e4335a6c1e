# Set-up and everyday commands. `make demo` and `make test` each install what they need first,
# so on a fresh machine either one is the whole set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint tensorboard clean-demo

install: $(STAMP)

# Re-installs only when the dependency list changes. No root is needed: the demo speech comes from
# the espeakng-loader wheel. As root on Debian/Ubuntu it also adds FFmpeg, which only coqui-tts's own
# `speaker_wav=` file loading needs (a test uses it).
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@command -v ffmpeg >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else echo "note: FFmpeg is not installed; only coqui-tts's speaker_wav= path needs it (sudo apt-get install ffmpeg)" >&2; fi; }
	touch $(STAMP)

# The whole job on the embedded default: `python -m vago_lightning demo` (each stage is skipped when
# its output is already there).
demo: install
	$(PY) -m vago_lightning demo

# The compare page is checked in a real headless browser (Debian's chromium).
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP): | $(STAMP)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install it (Debian/Ubuntu: sudo apt-get install chromium) for the page test" >&2; fi; }
	touch $(BROWSER_STAMP)

test: install $(BROWSER_STAMP) lint
	$(PY) -m pytest

# ruff: lint and format check (settings in pyproject.toml); `ruff format .` fixes the format.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Everything but the cases marked slow.
test-fast: install $(BROWSER_STAMP)
	$(PY) -m pytest -m "not slow"

tensorboard: install
	$(VENV)/bin/tensorboard --logdir lightning_logs

clean-demo:
	rm -rf models/tiny-xtts corpora/demo data_shards checkpoints lightning_logs exported samples reports

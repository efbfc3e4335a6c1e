# Set-up and everyday commands. `make demo` and `make test` each install what they need first,
# so on a fresh machine either one is the whole set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint tensorboard clean-demo

install: $(STAMP)

# Re-installs only when the dependency list changes.
$(STAMP): setup.cfg pyproject.toml
	@command -v espeak-ng >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	  else echo "espeak-ng is missing: install it (Debian/Ubuntu: sudo apt-get install espeak-ng), then re-run make" >&2; exit 1; fi; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The whole job on the embedded default. Each step is skipped when its output is already there.
TINY := models/tiny-xtts
DEMO := corpora/demo

$(TINY)/model.pth: | $(STAMP)
	$(PY) -m vago_lightning tiny-base --out $(TINY)

$(DEMO)/interview/metadata.csv: | $(STAMP)
	$(PY) -m vago_lightning demo-data --out $(DEMO) --overwrite

# Stage one, as the seed's Milliomos run: the quiz corpus alone, from the base model.
checkpoints/demo-quiz/best.ckpt: data_shards/manifest.json
	$(PY) train.py fit --config finetune.yaml --config configs/demo.yaml --config configs/demo-quiz.yaml

# Stage two, as the seed's combined run: both corpora, from stage one's best, at a lower LR.
checkpoints/demo-combined/best.ckpt: checkpoints/demo-quiz/best.ckpt
	$(PY) train.py fit --config finetune.yaml --config configs/demo.yaml

# After training, as the seed: both stages exported to the XTTS-v2 layout (with the demo voice
# stored as a named speaker), samples from stage two, and the two compared on one page.
REF := $(DEMO)/quiz/wavs/quiz_0001.wav
exported/demo-%/model.pth: checkpoints/demo-%/best.ckpt
	$(PY) -m vago_lightning export --ckpt $< --out exported/demo-$* --speaker demo_host=$(REF) --overwrite

demo: install $(TINY)/model.pth $(DEMO)/interview/metadata.csv
	$(PY) -m vago_lightning prepare --corpus quiz=$(DEMO)/quiz --corpus interview=$(DEMO)/interview \
	  --language hu --base_model $(TINY) --out data_shards
	$(MAKE) --no-print-directory exported/demo-quiz/model.pth exported/demo-combined/model.pth
	$(PY) -m vago_lightning generate --model exported/demo-combined --reference $(REF) --out samples/demo-combined
	$(PY) -m vago_lightning compare --model milliomos=exported/demo-quiz --model combined=exported/demo-combined \
	  --reference $(REF) --out reports/demo

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

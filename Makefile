# Build orchestration for the zero-grad recipes site. `make help` lists the targets.

PYTHON      ?= python3
VENV        ?= .venv
BUILDDIR    ?= _build
LANGUAGES   := en zh
# CIFAR-10 for the build: an image-folder archive (.tar.gz), an image folder, or
# empty to let torchvision download it. The default is the copy beside the repo.
CIFAR10     ?= $(firstword $(wildcard ../shared/data/cifar10-images.tar.gz))
# Only execute recipes whose file name matches this (e.g. RECIPE=zeroing_out_gradients).
RECIPE      ?=
SPHINXOPTS  ?=
PORT        ?= 8000
# One recipe for `make test-recipe`, `make run-en` and `make run-zh` (its file name without .py).
NAME        ?=
# `make run-en|run-zh NAME=x SMOKE=0` runs the recipe in full, on the build's data.
SMOKE       ?= 1
# The browser checks drive Debian's Chromium, never a browser downloaded for them.
export CHROMIUM ?= /usr/bin/chromium

BIN         := $(VENV)/bin
DATA_DIR    := _build/data/cifar10
SPHINXBUILD := $(BIN)/sphinx-build -b html -W --keep-going -q $(SPHINXOPTS)
ifneq ($(RECIPE),)
SPHINXBUILD += -D sphinx_gallery_conf.filename_pattern='$(RECIPE)'
endif

# Each language builds in its own process, one CPU thread each, and `make html`
# runs the two side by side: a mini-batch of 4 images is too small for a second
# thread to speed up, while a second process doubles the throughput.
export OMP_NUM_THREADS ?= 1
export MPLBACKEND      := Agg
export PYTHONHASHSEED  := 0

ifeq ($(suffix $(CIFAR10)),.gz)
DATA_DEPS := $(DATA_DIR)/.complete
export CIFAR10_ROOT := $(abspath $(DATA_DIR))
else ifneq ($(CIFAR10),)
export CIFAR10_ROOT := $(abspath $(CIFAR10))
else
export CIFAR10_ROOT := $(abspath _build/data/download)
endif

.PHONY: help html html-en html-zh html-noplot html-smoke serve data venv chromium test test-smoke test-browser \
        test-recipe run run-en run-zh linkcheck-external benchmark translation-status translation-record clean

help:
	@echo "make html            build both languages, executing every recipe (creates the venv, gets the data)"
	@echo "make html-en|html-zh build one language"
	@echo "make html RECIPE=x   execute only the recipes whose file name matches x"
	@echo "make html-noplot     build without executing any recipe (fast, no outputs)"
	@echo "make html-smoke      build the smoke-mode site alone into _build/smoke (what the site tests check)"
	@echo "make serve           serve _build/html on http://127.0.0.1:$(PORT)/"
	@echo "make test            run the test suite (smoke mode: seconds, no data needed)"
	@echo "make test-smoke      only the recipes in smoke mode and the translation checks"
	@echo "make test-browser    only the checks that drive a headless browser"
	@echo "make test-recipe NAME=x    the smoke tests and translation checks of recipe x alone"
	@echo "make run-en NAME=x, run-zh run recipe x in smoke mode with the site's fonts (SMOKE=0: in full)"
	@echo "make translation-status         which Chinese pages translate the current English"
	@echo "make translation-record PAGE=x  record that the Chinese page x is up to date again"
	@echo "make benchmark       time the build and the training against the classic recipe"
	@echo "make clean           remove everything generated"

# -- Environment -------------------------------------------------------------

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@echo "Setting up $(VENV) with the pinned requirements. The first time this downloads and"
	@echo "installs about 6 GB (PyTorch and its CUDA libraries are most of it) and takes minutes."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
	touch $@

# Like `playwright install --with-deps`: install the system package when allowed
# to (as root, or with password-less sudo); otherwise say what to install, and
# `make test` runs everything else.
chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "No $(CHROMIUM), and no permission to install it: the browser checks will not run."; exit 0; fi; \
	echo "Installing Debian's chromium package for the browser checks"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || echo "Could not install chromium: the browser checks will not run."

# -- Data --------------------------------------------------------------------
# The archive is checked and unpacked next to its final place, then renamed, so
# an interrupted extraction never leaves a folder that looks complete.

data: $(DATA_DEPS)

$(DATA_DIR)/.complete: $(CIFAR10)
	@test -f "$<" || { echo "CIFAR10=$< is not a file" >&2; exit 1; }
	rm -rf $(DATA_DIR) $(DATA_DIR).partial
	mkdir -p $(DATA_DIR).partial
	@if [ -f "$<.sha256" ]; then \
	  echo "checking $<"; \
	  echo "$$(cut -d' ' -f1 "$<.sha256")  $<" | sha256sum --check --quiet || \
	    { echo "error: $< does not match its checksum $<.sha256" >&2; exit 1; }; \
	fi
	tar -xzf "$<" -C $(DATA_DIR).partial || \
	  { echo "error: could not extract $< (truncated or not a .tar.gz?)" >&2; rm -rf $(DATA_DIR).partial; exit 1; }
	touch $(DATA_DIR).partial/.complete
	mv $(DATA_DIR).partial $(DATA_DIR)

# -- Site --------------------------------------------------------------------
# Sphinx-Gallery writes generated pages into the source tree, so each build
# works on a copy of docs/<lang> under $(BUILDDIR)/src: the smoke-mode site the
# tests build can never mix its outputs with the real one.

html: venv data
	@echo "Building both languages side by side, executing each changed recipe (a clean build: about 1.5 minutes)."
	$(MAKE) --no-print-directory -j2 html-en html-zh
	@echo "Built $(BUILDDIR)/html/index.html"

# Sphinx-Gallery caches each recipe's run (NAME.py.md5 and outputs) in that
# copy. Before building, forget a recipe that no longer exists, and one whose
# run an interrupted build left incomplete (the .md5 is written before the
# notebook and the zip), so that it runs again. The html tree is rewritten
# each time so that no page of a removed recipe stays online.
html-en html-zh: html-%: venv data
	mkdir -p $(BUILDDIR)/src/$*
	cd $(BUILDDIR)/src/$* && for copy in *.py; do \
	  name=$${copy%.py}; [ -e "$$copy" ] || continue; \
	  if [ ! -e "$(CURDIR)/recipes/$*/$$copy" ]; then rm -f "$$name".*; \
	  elif [ ! -e "$$name.ipynb" ] || [ ! -e "$$name.zip" ]; then rm -f "$$copy.md5"; fi; \
	done
	cp -a docs/$*/. $(BUILDDIR)/src/$*/
	rm -rf $(BUILDDIR)/html/$*
	$(SPHINXBUILD) -t lang_$* -c . -d $(BUILDDIR)/doctrees/$* \
	  $(BUILDDIR)/src/$* $(BUILDDIR)/html/$*
	cp docs/index.html $(BUILDDIR)/html/index.html

# A separate tree: pages built without running must never be taken for run ones.
html-noplot:
	$(MAKE) --no-print-directory html BUILDDIR=_build/noplot CIFAR10= \
	  SPHINXOPTS="-D plot_gallery=0 $(SPHINXOPTS)"

# The smoke-mode site the site tests check (tests/conftest.py builds it with this
# target), alone: seconds per recipe, no data, no network.
html-smoke:
	ZERO_GRAD_SMOKE=1 $(MAKE) --no-print-directory html BUILDDIR=_build/smoke CIFAR10=

serve:
	$(BIN)/python -m http.server --bind 127.0.0.1 --directory $(BUILDDIR)/html $(PORT)

# -- Checks ------------------------------------------------------------------

# Without Chromium the browser checks are skipped: say so last, where it is seen.
NO_BROWSER_NOTE := [ -x "$(CHROMIUM)" ] || echo "NOTE: the browser checks did not run: install Debian's chromium package (apt-get install chromium)"

test: venv chromium
	@$(BIN)/python -m pytest tests; status=$$?; $(NO_BROWSER_NOTE); exit $$status

test-smoke: venv
	$(BIN)/python -m pytest tests -m "not site"

# One recipe's tests: its tests/test_NAME.py in both languages (smoke mode), its
# translation and glossary checks, and the repository layout checks. -k matches
# NAME as a substring of the test ids.
test-recipe: venv
	@$(CHECK_NAME)
	$(BIN)/python -m pytest tests -k "$(NAME) or repo_layout" -m "not site"

# One recipe in one language, as the tests run it (tests/run_recipe.py, through
# conftest.py's RUNNER): the site's pinned Chinese font, a missing glyph an error,
# the figures saved to _build/run/<lang>/NAME/figures/. The language is part of
# the target, not a LANG variable: make reads LANG from the environment (the
# locale, e.g. C.UTF-8), and LANG=zh on the command line would also become the
# locale of the recipe's process.
run-en run-zh: run-%: venv $(if $(filter 0,$(SMOKE)),data)
	@$(CHECK_NAME)
	@$(BIN)/python tests/run_recipe.py "$(NAME)" $* $(if $(filter 0,$(SMOKE)),--full)

run:
	@if [ "$(origin LANG)" = "command line" ]; then \
	  echo "make run takes no LANG (that is the locale's variable): make run-$(LANG) NAME=$(NAME)" >&2; exit 2; fi
	@$(CHECK_NAME)
	$(MAKE) --no-print-directory run-en run-zh NAME=$(NAME) SMOKE=$(SMOKE)

RECIPE_NAMES = $(basename $(notdir $(wildcard recipes/en/*.py)))
CHECK_NAME = test -n "$(NAME)" -a -f "recipes/en/$(NAME).py" || \
  { echo "usage: make $@ NAME=recipe, one of: $(RECIPE_NAMES)" >&2; exit 2; }

test-browser: venv chromium
	@$(BIN)/python -m pytest tests -m browser; status=$$?; $(NO_BROWSER_NOTE); exit $$status

translation-status: venv
	@$(BIN)/python tests/translation_records.py status

translation-record: venv
	@test -n "$(PAGE)" || { echo "usage: make translation-record PAGE=recipes/zh/NAME.py (or docs/zh/NAME.rst)" >&2; exit 2; }
	@$(BIN)/python tests/translation_records.py record $(PAGE)

linkcheck-external: venv
	-$(BIN)/python -m pytest tests -m external --run-external

benchmark: venv data
	$(BIN)/python benchmarks/build_and_train.py

clean:
	rm -rf _build

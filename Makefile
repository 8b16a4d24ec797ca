# imckit: one command builds the book, one runs every test (README.md).
# Each target sets up what it needs: a local virtual environment (.venv, reinstalled only when
# pyproject.toml or the lock changes), the book's JavaScript (from the npm registry, git-ignored),
# and Chromium (Debian package) for the browser tests.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip on some machines warns once per package about unreachable local indexes; keep the log readable.
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.imckit-installed
VENDOR := book/_static/vendor/.versions
HTML := _build/html/index.html
PRINT := _build/print/imckit.pdf
BOOK_SOURCES := _config.yml _toc.yml $(wildcard book/*.ipynb book/*.md book/*.bib book/_ext/*.py book/data/*) $(wildcard imckit/*.py imckit/*/*.py)
PYTEST_ARGS ?=

.PHONY: help venv book print test test-fast lab bench clean chromium

help:
	@echo "make book    build the book (sets up everything, executes every chapter) -> _build/html"
	@echo "make print   the print edition: one page -> _build/singlehtml, PDF -> _build/print/imckit.pdf"
	@echo "make test    run every test: unit + doctests, book build, notebooks, browser"
	@echo "make lab     JupyterLab on both lab editions (student, instructor), MyST rendered"
	@echo "make labs    write the student and instructor editions -> _build/labs"
	@echo "make bench   run the benchmarks (ratios vs plain torch, printed)"

$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(QUIET_PIP)
	$(BIN)/python -m pip install -q -r requirements/lock.txt $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps -e . $(QUIET_PIP)
	@touch $@

venv: $(STAMP)

$(VENDOR): tools/fetch_vendor.sh
	bash tools/fetch_vendor.sh

# The book is rebuilt (every chapter executed afresh) only when a source or the package changed.
$(HTML): $(STAMP) $(VENDOR) $(BOOK_SOURCES)
	$(BIN)/jupyter-book build . --all -n -W --keep-going
	@touch $@

book: $(HTML)
	@echo "book: $(CURDIR)/_build/html/index.html ($$(du -sh _build/html | cut -f1))"

# apt-get through sudo when not root (hosted CI runners are not root) and sudo exists.
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

chromium:
	@command -v chromium >/dev/null || { echo "installing Chromium (Debian package) for the browser tests"; \
	  ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null; }

# The print edition: every chapter on one page (explorers as their first frame, with the setting
# they show), printed to PDF by headless Chromium. Rebuilt only when a source changed.
print: $(PRINT)

$(PRINT): $(STAMP) $(VENDOR) $(BOOK_SOURCES) | chromium
	$(BIN)/jupyter-book build . --all -n -W --keep-going --builder singlehtml
	@mkdir -p $(@D)
	chromium --headless --no-sandbox --disable-gpu --no-pdf-header-footer --run-all-compositor-stages-before-draw \
	  --virtual-time-budget=30000 --print-to-pdf=$@ file://$(CURDIR)/_build/singlehtml/index.html 2>/dev/null
	@echo "print edition: $(CURDIR)/$@ ($$(du -h $@ | cut -f1))"

test: $(HTML) $(PRINT) chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Unit tests and doctests only (no book build, no browser): the quick loop while developing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not book and not notebook" $(PYTEST_ARGS)

# The teaching labs (tools/make_labs.py): every chapter as a student edition (solutions removed,
# answer cells blank, checks kept) and an instructor edition, rewritten for JupyterLab.
.PHONY: labs
labs: $(STAMP)
	$(BIN)/python tools/make_labs.py

# JupyterLab on the editions (LAB_DIR=book for the chapters' sources). JupyterLab refuses to
# start as root without --allow-root: containers and many lab images run as root.
LAB_DIR ?= _build/labs
lab: $(STAMP) $(if $(filter _build/labs,$(LAB_DIR)),labs)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_DIR)

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache

# wsslib: the two commands of the README's Quick start.
#   make reproduce   set up .venv if missing, run every notebook (full mode, embedded default)
#                    and write runs/<timestamp>/report.md (ARGS="--only 05 -p seed=1" passes options on)
#   make test        set up .venv if missing, run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup reproduce notebooks smoke test clean

setup: $(STAMP)

# The exact measured stack (constraints.txt, for Python 3.11); pyproject.toml only holds ranges.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the measured stack (constraints.txt) is for Python 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/wsslib reproduce --out runs $(ARGS)

notebooks: $(STAMP)  ## re-execute the committed notebooks in place (full mode), ready to commit
	$(BIN)/wsslib reproduce --out runs --in-place $(ARGS)

smoke: $(STAMP)
	$(BIN)/wsslib reproduce --smoke --out runs $(ARGS)

test: $(STAMP)
	WSSLIB_SMOKE=1 MPLBACKEND=Agg $(BIN)/python -m pytest

clean:
	rm -rf runs results .pytest_cache

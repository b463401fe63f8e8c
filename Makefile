# Quick start:  make demo   (set up, compile the bundled example, print its test perplexity on data/ptb)
#               make test   (set up + run the whole test suite)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXAMPLE ?= examples/ptb-egru-small/model.pt
PTB     ?= data/ptb

.PHONY: setup test demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,tvm]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: setup
	$(BIN)/python examples/demo.py --model $(EXAMPLE) --ptb $(PTB) --out demo-out

clean:
	rm -rf demo-out build *.egg-info

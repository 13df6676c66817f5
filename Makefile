# Two commands on a fresh machine (each creates the virtualenv when it is missing):
#   make demo    # set up, then run the main job (DEMO=phase_diagram, the default: the demo phase-diagram sweep,
#                # 14 runs on 2 workers, then its report; DEMO=quickstart: configs/quickstart.yaml, ~30 s)
#   make test    # set up, then run the test suite
# VENV=<dir> puts the virtualenv elsewhere (.ci/run uses a throw-away one); PYTHON picks the interpreter.
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
DEMO ?= phase_diagram
BIN := $(VENV)/bin

# The main job of each DEMO value (one command line each).
DEMO_quickstart := $(BIN)/python -m lightning_phase fit --config configs/quickstart.yaml
DEMO_phase_diagram := $(BIN)/python -m lightning_phase sweep sweeps/phase_diagram_demo.yaml --workers 2 \
	&& $(BIN)/python -m lightning_phase report phase_diagram_demo --out reports/phase_diagram_demo

.PHONY: demo test setup
demo: $(VENV)/.installed
	@test -n "$(DEMO_$(DEMO))" || { echo "make demo: DEMO=$(DEMO); expected one of: quickstart, phase_diagram"; exit 2; }
	OMP_NUM_THREADS=1 $(DEMO_$(DEMO))

test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,dashboard]"
	touch $@

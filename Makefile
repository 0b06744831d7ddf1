# The README's set-up: `make mine` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/mine
WORLD_WORKDIR ?= runs/world
# Shifted copies of the test split every arm is also evaluated on (ltg_jax/data/shifts.py).
SHIFTS := rotate90,shrink,occlude,low_contrast,noise
# Persistent XLA compilation cache: repeated runs skip recompiling.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax

.PHONY: install mine mine-spread world world-select test lint format

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

mine: install
	$(PY) -m sample.mine --workdir=$(WORKDIR)

# The spread-aware comparison: 3 generation x 3 fine-tuning seeds and the long-tail baselines
# (class-balanced resampling, logit adjustment), also on the shifted test sets, on the same
# workdir as `make mine` (it reuses what that run finished).
mine-spread: install
	$(PY) -m sample.mine --workdir=$(WORKDIR) --config.generation_seeds=0,1,2 \
	  --config.arms=real,real+balanced,real+logit_adjusted,unguided,ltg,ltg+logit_adjusted \
	  --config.eval.shifts=$(SHIFTS)

# The ground-truth benchmark (docs/world.md): every arm and baseline, 3 x 3 seeds, scored on
# the rare-mode test group; world-select is the validation sweep its guidance comes from.
world: install
	$(PY) -m sample.mine --config configs/mine.py:world --workdir=$(WORLD_WORKDIR)

world-select: install
	$(PY) -m sample.mine --config configs/mine.py:world_select --workdir=runs/world_select

test: install lint
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# roadmap: every target sets itself up (a .venv with torch 2.14.1 and the project, editable).
#   make run                      the default job: ResNet-50 with the ConvNeXt recipe on all of Imagenette, ~2 min
#   make test                     the test suite (what CI runs)
# Pass Hydra overrides with ARGS, e.g. make run ARGS="step=inverted_bottleneck scale=proxy"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
JOB    ?= step=modern_recipe scale=quick   # make run's default job (ARGS, when given, replace it)
SCALE  ?= tour
SEEDS  ?= 0
TEST_PROCS ?= auto   # pytest-xdist workers (auto: one per core; 0 runs the suite in this process)

.PHONY: setup run test test-all complexity sweep sweep-full ablation cmt-sweep report bench proxy device-bundle clean

# pip -qq: errors only (a pip config with missing find-links folders warns once per package otherwise)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq --no-compile torch==2.14.1 torchvision==0.29.1   # no .pyc for all of torch: ~45 s less; imported modules compile on first use
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -qq --no-compile -e '.[dev]'   # (setuptools' editable-install notice is not the user's business)
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)            ## one step (default: $(JOB)) -> metrics.json
	$(BIN)/python -m roadmap $(if $(ARGS),$(ARGS),$(JOB))

test: $(STAMP)           ## the default suite (slow-marked tests excluded); WANDB offline; one process per core, whole files each
	WANDB_MODE=offline $(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist loadfile $(ARGS)

test-all: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist loadfile -m "" $(ARGS)

complexity: $(STAMP)     ## results/complexity.md/.csv (both regimes) and results/complexity-cmt.md
	$(BIN)/python -m roadmap.complexity $(ARGS)

sweep: $(STAMP)          ## your own trajectory: the main path at $(SCALE) (tour: 13.4 min from a fresh clone on 2 cores, 2 runs side by side) + report in results/
	$(BIN)/python -m roadmap -m experiment=roadmap_path scale=$(SCALE) seed=$(SEEDS) hydra/launcher=parallel $(ARGS)

sweep-full: $(STAMP)     ## main path + kernel branches
	$(BIN)/python -m roadmap -m experiment=roadmap_full scale=$(SCALE) seed=$(SEEDS) $(ARGS)

ablation: $(STAMP)       ## leave-one-out: ConvNeXt-T with each change reverted alone
	$(BIN)/python -m roadmap -m experiment=ablation scale=$(SCALE) seed=$(SEEDS) $(ARGS)

cmt-sweep: $(STAMP)      ## the ConvNeXt -> CMT hybrid roadmap (8 steps, ConvNeXt-T -> CMT-S) + report in results/
	$(BIN)/python -m roadmap -m experiment=convnext_to_cmt scale=$(SCALE) seed=$(SEEDS) $(ARGS)

proxy: $(STAMP)          ## the CPU proxy study (scale=proxy64; docs/studies/proxy64.md): main path, SEEDS=0,1,2, ~50 min per seed on 2 cores
	PY=$(BIN)/python bash experiments/cpu_proxy_study.sh path proxy64 $(SEEDS)

report: $(STAMP)         ## make report SWEEP=outputs/sweeps/<sweep id>
	$(BIN)/python -m roadmap.report $(SWEEP) $(ARGS)

bench: $(STAMP)          ## ours vs timm, train + infer img/s -> results/bench-cpu.md
	$(BIN)/python -m roadmap.bench $(ARGS)

device-bundle: $(STAMP)  ## .device/: wheels the GPU machine lacks + Imagenette as WebP; prints what would travel
	$(BIN)/python -m roadmap.bundle build $(ARGS)

clean:
	rm -rf outputs .pytest_cache

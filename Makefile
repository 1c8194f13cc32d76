# The two commands of the README: `make demo` (main job) and `make test` (the tests), plus
# shortcuts for the common jobs. Every target bootstraps the environment first (idempotent,
# cached; see tools/bootstrap.sh). `make help` lists them.
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
# Where the shortcuts write (the trainers' --output); outside the checkout by default.
OUT ?= $(or $(INTERNIMAGE_OUTPUT),$(HOME)/internimage-output)/classification

.PHONY: help bootstrap demo test bench lint shell train eval throughput

help:
	@echo "make demo                          train InternImage on real digits, offline (the main job)"
	@echo "make test                          the test suite (PYTEST_ARGS=... passes options to pytest)"
	@echo "make train CFG=x.yaml DATA=dir     classification training (ARGS='--opts K V ...', OUT=dir)"
	@echo "make eval CFG=x.yaml DATA=dir CKPT=file   top-1/top-5 of a checkpoint"
	@echo "make throughput CFG=x.yaml         images/s of the config's model (random input, no dataset)"
	@echo "make bench                         the five benchmarks; PASS/MISS per target, fails on a miss"
	@echo "make lint                          ruff"
	@echo "make shell                         a shell with the environment active (exit to leave)"
	@echo "Without make: source $(VENV)/bin/activate, or call $(VENV)/bin/python directly."

bootstrap:
	@VENV="$(abspath $(VENV))" tools/bootstrap.sh

# Main job: InternImage trained on scikit-learn's real digits with the real trainer.
demo: bootstrap
	$(PY) -m classification.demo_digits

# pytest exit code 5 means "collected nothing": say so instead of failing obscurely.
test: bootstrap
	@rc=0; $(PY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

# Benchmarks: DCNv3 kernels vs the reference; InternImage-T vs ConvNeXt-T; InternImage-T in
# onnxruntime vs PyTorch; Mask R-CNN and UperNet InternImage-T vs their R50 versions. All five
# run; a missed target fails the target.
bench: bootstrap
	@failed=""; \
	for bench in "-m ops_dcnv3.benchmark" "-m classification.benchmark" "-m classification.benchmark_onnx" \
	             detection/benchmark.py segmentation/benchmark.py; do \
	  echo "== python $$bench"; $(PY) $$bench || failed="$$failed [$$bench]"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: missed a target or failed:$$failed"; exit 1; fi; \
	echo "bench: every target met"

lint: bootstrap
	$(PY) -m ruff check .

# A sub-shell with the virtualenv first on PATH (make cannot change the calling shell).
shell: bootstrap
	@echo "environment $(abspath $(VENV)) active; 'exit' leaves it"
	@VIRTUAL_ENV="$(abspath $(VENV))" PATH="$(abspath $(VENV))/bin:$$PATH" $${SHELL:-/bin/bash} -i

# The shortcuts check their variables before anything runs (no bootstrap first).
need = $(if $($(1)),,$(error $(1)=... is required: $(2)))
ifneq ($(filter train eval throughput,$(MAKECMDGOALS)),)
$(call need,CFG,a config yaml such as CFG=classification/configs/internimage_t_1k_224.yaml)
endif
ifneq ($(filter train eval,$(MAKECMDGOALS)),)
$(call need,DATA,the dataset root (train/ and val/ class folders or list files) such as DATA=/data/imagenet)
endif
ifneq ($(filter eval,$(MAKECMDGOALS)),)
$(call need,CKPT,the checkpoint to evaluate)
endif

train: bootstrap
	$(PY) classification/main.py --cfg $(CFG) --data-path $(DATA) --output $(OUT) $(ARGS)

eval: bootstrap
	$(PY) classification/main.py --cfg $(CFG) --data-path $(DATA) --eval --resume $(CKPT) --output $(OUT) $(ARGS)

throughput: bootstrap
	$(PY) classification/main.py --cfg $(CFG) --throughput --output $(OUT) $(ARGS)

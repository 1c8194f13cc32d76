# The two commands of the README: `make demo` (main job) and `make test` (the tests).
# Both bootstrap the environment first (idempotent, cached; see tools/bootstrap.sh).
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python

.PHONY: bootstrap demo test bench lint

bootstrap:
	@VENV="$(abspath $(VENV))" tools/bootstrap.sh

# Main job: InternImage trained on scikit-learn's real digits with the real trainer.
demo: bootstrap
	$(PY) -m classification.demo_digits

# Benchmarks: DCNv3 kernels vs the reference; InternImage-T vs ConvNeXt-T; Mask R-CNN and
# UperNet InternImage-T vs their R50 versions.
bench: bootstrap
	$(PY) -m ops_dcnv3.benchmark
	$(PY) -m classification.benchmark
	$(PY) detection/benchmark.py
	$(PY) segmentation/benchmark.py

# pytest exit code 5 means "collected nothing": say so instead of failing obscurely.
test: bootstrap
	@rc=0; $(PY) -m pytest tests $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

lint: bootstrap
	$(PY) -m ruff check .

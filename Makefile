# The two set-up commands of the README. Both create the virtual environment when it is missing
# (tools/setup_env.sh: torch, the OpenMMLab stack, mmcv 2.1.0 with compiled ops).
# CMT_MM_WHEELHOUSE=DIR offers a prebuilt mmcv wheel; built wheels are cached in ~/.cache/cmt_mm.
VENV ?= .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test env

env:
	bash tools/setup_env.sh $(VENV)

demo: env
	$(PYTHON) tools/run_demo.py

test: env
	$(PYTHON) -m pytest

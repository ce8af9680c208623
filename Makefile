# The two commands of the README. Each sets the machine up first (idempotent).
.PHONY: setup demo test test-fast clean-runs

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/edgedistill run configs/demo.yaml

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs

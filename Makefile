# The two commands of the README. Each sets the machine up first (idempotent): the demo
# with the runtime dependencies a user needs, the tests with the dev extras too.
.PHONY: setup setup-dev demo test test-fast clean-runs

setup:
	@bash scripts/setup.sh runtime

setup-dev:
	@bash scripts/setup.sh dev

demo: setup
	.venv/bin/edgedistill run configs/demo.yaml

test: setup-dev
	.venv/bin/python -m pytest -q

test-fast: setup-dev
	.venv/bin/python -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs

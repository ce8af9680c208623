# The two commands of the README. Each sets the machine up first (idempotent): the demo
# with the runtime dependencies a user needs, the tests with the dev extras too.
.PHONY: setup setup-dev demo demo-all test test-fast clean-runs

setup:
	@bash scripts/setup.sh runtime

setup-dev:
	@bash scripts/setup.sh dev

demo: setup
	.venv/bin/edgedistill run configs/demo.yaml

# The demo, then the CALICO pipeline (configs/calico.yaml, about an hour more on 2 cores with its alpha
# ablation: too long for the 15-minute demo).
demo-all: demo
	.venv/bin/edgedistill run configs/calico.yaml

test: setup-dev
	.venv/bin/python -m pytest -q

test-fast: setup-dev
	.venv/bin/python -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs

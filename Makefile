# The two entry points the README starts with. Both set themselves up (scripts/bootstrap) and need root.
MODE ?= iptables
PYTEST ?= .venv/bin/pytest

.PHONY: bootstrap conformance lint test

bootstrap:
	bash scripts/bootstrap

## conformance: the main job: the conformance catalogue on the local provider (MODE=iptables|nftables)
conformance: bootstrap
	$(PYTEST) suites/conformance -m conformance --provider local --mode $(MODE) -n 2 -p no:cacheprovider

## test: the project's own tests (providers, probes, reports; brings up real local clusters)
test: bootstrap
	$(PYTEST) tests -p no:cacheprovider --durations=25

## lint: ruff and mypy on the library (settings in pyproject.toml, versions in constraints.txt)
lint: bootstrap
	.venv/bin/ruff check proxysuite
	.venv/bin/mypy

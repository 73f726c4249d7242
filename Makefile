# The two entry points the README starts with. Both set themselves up (scripts/bootstrap) and need root.
MODE ?= iptables
IP_FAMILY ?= ipv4
# Probes mostly wait, so more workers than cores pay: a dual-stack run has about twice the rows and needs 4 to
# stay under 5 minutes on 2 cores (docs/ip-family.md); IPv4, the CI job, keeps the 2 it has always run with.
WORKERS ?= $(if $(filter ipv4,$(IP_FAMILY)),2,4)
PYTEST ?= .venv/bin/pytest

.PHONY: bootstrap conformance lint test

bootstrap:
	bash scripts/bootstrap

## conformance: the main job: the conformance catalogue on the local provider (MODE=iptables|nftables,
## IP_FAMILY=ipv4|ipv6|dual, WORKERS=pytest-xdist workers)
conformance: bootstrap
	$(PYTEST) suites/conformance -m conformance --provider local --mode $(MODE) --ip-family $(IP_FAMILY) -n $(WORKERS) -p no:cacheprovider

## test: the project's own tests (providers, probes, reports; brings up real local clusters)
test: bootstrap
	$(PYTEST) tests -p no:cacheprovider --durations=25

## lint: ruff and mypy on the library (settings in pyproject.toml, versions in constraints.txt)
lint: bootstrap
	.venv/bin/ruff check proxysuite
	.venv/bin/mypy

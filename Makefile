# The two entry points the README starts with. Both set themselves up (scripts/bootstrap) and need root.
MODE ?= iptables
IP_FAMILY ?= ipv4
# Probes mostly wait, so more workers than cores pay: a dual-stack run has about twice the rows and needs 4 to
# stay under 5 minutes on 2 cores (docs/ip-family.md); IPv4, the CI job, keeps the 2 it has always run with.
WORKERS ?= $(if $(filter ipv4,$(IP_FAMILY)),2,4)
PYTEST ?= .venv/bin/pytest

.PHONY: bootstrap conformance conformance-kind lint test test-kind test-cilium

bootstrap:
	bash scripts/bootstrap

## conformance: the main job: the conformance catalogue on the local provider (MODE=iptables|nftables,
## IP_FAMILY=ipv4|ipv6|dual, WORKERS=pytest-xdist workers)
conformance: bootstrap
	$(PYTEST) suites/conformance -m conformance --provider local --mode $(MODE) --ip-family $(IP_FAMILY) -n $(WORKERS) -p no:cacheprovider

## conformance-kind: the catalogue on kind (MODE=...), creating and deleting a cluster; with no Docker engine
## answering, the suite's own (installed and started by `proxysuite kind setup-engine`), and with no registry the
## offline node image (`proxysuite kind build-node-image`, built when missing)
conformance-kind: bootstrap
	.venv/bin/proxysuite kind setup-engine
	$(PYTEST) suites/conformance -m conformance --provider kind --mode $(MODE) -n $(WORKERS) -p no:cacheprovider

## test: the project's own tests (providers, probes, reports; brings up real local clusters)
test: bootstrap
	$(PYTEST) tests -p no:cacheprovider --durations=25

## test-kind: the project's own kind tests, heavy so not in `make test`: the suite's engine, the offline node image
## (boots; replaces an image that cannot be pulled), a cluster's life leaving the machine's kernel settings as they
## were, and a deliberately broken proxy failing the LoadBalancer rows on kind
test-kind: bootstrap
	PROXYSUITE_TEST_KIND_ENGINE=1 PROXYSUITE_TEST_KIND_IMAGE=1 PROXYSUITE_TEST_KIND_CLUSTER=1 \
	  $(PYTEST) tests/test_kind_engine.py tests/test_kind_nodeimage.py tests/test_kind_local_cluster.py tests/test_kind_broken_lb.py \
	  -p no:cacheprovider --durations=10

## test-cilium: Cilium's offline build (binaries, images, the chart rendered with the suite's values) and a real
## Cilium cluster that must leave no BPF program, mount, sysctl, address, route or firewall change behind
test-cilium: bootstrap
	.venv/bin/proxysuite kind setup-engine
	PROXYSUITE_TEST_KIND_CILIUM=1 $(PYTEST) tests/test_kind_cilium_cluster.py tests/test_kind_cilium.py -p no:cacheprovider --durations=10

## lint: ruff and mypy on the library (settings in pyproject.toml, versions in constraints.txt)
lint: bootstrap
	.venv/bin/ruff check proxysuite
	.venv/bin/mypy

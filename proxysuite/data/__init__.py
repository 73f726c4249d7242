"""Files the suite reads at run time, shipped as package data so that a non-editable install finds them.

``kind-configs/``  kind ``Cluster`` configs, one per proxy mode, and the Cilium Helm values
                   (docs/providers-kind-existing.md says what each sets)
``components/``    the Go module (``go.mod``/``go.sum``) pinning the Kubernetes components
                   that the local provider builds and caches
``alerts/``        the Prometheus alerting rules template and the fault-injecting proxy wrapper that
                   captures real series for their tests (docs/alerts.md)
``promtool/``      the Go module pinning promtool, which tests the rules (built and cached like the components)
``cilium/``        the Go module pinning Cilium for ``--mode cilium`` on kind (agent, operator, chart, BPF sources),
                   with a stand-in for one module the Go module proxy does not serve (docs/cilium.md)
``helm/``          the Go module pinning Helm, which installs that chart
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
KIND_CONFIGS = ROOT / "kind-configs"
COMPONENTS_MODULE = ROOT / "components"
ALERTS = ROOT / "alerts"
PROMTOOL_MODULE = ROOT / "promtool"
CILIUM_MODULE = ROOT / "cilium"
HELM_MODULE = ROOT / "helm"

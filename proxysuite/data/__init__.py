"""Files the suite reads at run time, shipped as package data so that a non-editable install finds them.

``kind-configs/``  kind ``Cluster`` configs, one per proxy mode, and the Cilium Helm values
                   (docs/providers-kind-existing.md says what each sets)
``components/``    the Go module (``go.mod``/``go.sum``) pinning the Kubernetes components
                   that the local provider builds and caches
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
KIND_CONFIGS = ROOT / "kind-configs"
COMPONENTS_MODULE = ROOT / "components"

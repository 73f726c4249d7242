"""Every container image the suite pulls, per provider and mode, so air-gapped users can preload them.

``proxysuite images --provider kind --mode cilium`` prints one reference a line
(with ``# purpose`` comments); pipe it to ``docker pull`` or a registry mirror
script. The kind node image carries kube-proxy, CoreDNS, kindnet and the
pause image, so those are not listed separately.

Pins and where they come from:

* kind node images: the release notes of kind v0.33.0 (the only images that
  release supports; use the digest).
* cloud-provider-kind v0.11.1 (registry.k8s.io promotion of 2026-06-26) and the
  Envoy image it starts per LoadBalancer (its ``DefaultProxyImageName``).
* Cilium: the Helm chart version below; the chart itself pins each image by
  digest, so the tags printed here are for preloading, ``helm template`` shows
  the digests.
* Ryuk: the reaper testcontainers starts to remove the suite's side containers
  when the Python process dies (``testcontainers==4.15.0`` default).

Every pin can be overridden with an environment variable (named next to it),
for mirrors and for trying newer releases; the suite prints what it used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import SuiteError
from .modes import MODES

KIND_VERSION = "v0.33.0"
"""kind release the node images below were built for."""

KIND_NODE_IMAGES: dict[str, str] = {
    "1.37": "kindest/node:v1.37.0@sha256:a1ed56cfb0e7b93589bdf97c8cd566405a265939e3620fc4f5de89adff580ae5",
    "1.36": "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed",
    "1.35": "kindest/node:v1.35.8@sha256:07b2536e30b803ed61d1677a79df6115f798ce64c80f9e22f6ed45afd09323c0",
    "1.34": "kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d",
}
"""Node image per Kubernetes minor, from the kind v0.33.0 release notes. Override: ``PROXYSUITE_KIND_NODE_IMAGE``."""

DEFAULT_KIND_NODE_IMAGE = KIND_NODE_IMAGES["1.37"]

CLIENT_IMAGE = "python:3.13-alpine3.22"
"""Client pods and the external client: the probe engine needs python3. Override: ``PROXYSUITE_CLIENT_IMAGE``."""

AGNHOST_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
"""Backends (``netexec``), as in upstream e2e. Override: ``PROXYSUITE_BACKEND_IMAGE``."""

CLOUD_PROVIDER_KIND_IMAGE = (
    "registry.k8s.io/cloud-provider-kind/cloud-controller-manager:v0.11.1"
    "@sha256:40e18b9cd9c798cce40d39ff5c099a4f16a36c268d8e1dda469d73955a35e403"
)
"""LoadBalancer controller for kind. Override: ``PROXYSUITE_CLOUD_PROVIDER_KIND_IMAGE``."""

CLOUD_PROVIDER_KIND_ENVOY_IMAGE = "docker.io/envoyproxy/envoy:v1.33.2"
"""The container cloud-provider-kind starts for each LoadBalancer Service."""

RYUK_IMAGE = "testcontainers/ryuk:0.8.1"
"""testcontainers' reaper (honours ``RYUK_CONTAINER_IMAGE`` like testcontainers does)."""

CILIUM_CHART_VERSION = "1.20.2"
"""Cilium's release: the offline build's pin (``proxysuite/data/cilium/go.mod``, a test keeps them equal) and, with
``PROXYSUITE_CILIUM_SOURCE=repo``, the chart version from https://helm.cilium.io. Override: ``PROXYSUITE_CILIUM_VERSION``."""

CILIUM_CHART_REPO = "https://helm.cilium.io"


@dataclass(frozen=True)
class ImageRef:
    ref: str
    purpose: str
    pullable: bool = True
    """False when the reference lacks a tag the suite can know offline (printed as a comment)."""

    def __str__(self) -> str:
        return self.ref if self.pullable else f"# {self.ref}:<tag pinned by the chart> ({self.purpose})"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def client_image() -> str:
    return _env("PROXYSUITE_CLIENT_IMAGE", CLIENT_IMAGE)


def backend_image() -> str:
    return _env("PROXYSUITE_BACKEND_IMAGE", AGNHOST_IMAGE)


def cilium_version() -> str:
    return _env("PROXYSUITE_CILIUM_VERSION", CILIUM_CHART_VERSION)


def cloud_provider_kind_image() -> str:
    return _env("PROXYSUITE_CLOUD_PROVIDER_KIND_IMAGE", CLOUD_PROVIDER_KIND_IMAGE)


def ryuk_image() -> str:
    return _env("RYUK_CONTAINER_IMAGE", RYUK_IMAGE)


def k8s_minor(version: str) -> str:
    """``v1.37.2`` → ``1.37``."""
    m = re.match(r"v?(\d+)\.(\d+)", version.strip())
    if not m:
        raise SuiteError(f"cannot read a Kubernetes version from {version!r}", "use --k8s-version vMAJOR.MINOR.PATCH, e.g. v1.37.0")
    return f"{m.group(1)}.{m.group(2)}"


def image_version(image: str) -> str | None:
    """The Kubernetes version a ``kindest/node:vX.Y.Z[@sha256:…]`` reference names, or None."""
    m = re.search(r":(v\d+\.\d+\.\d+)", image)
    return m.group(1) if m else None


def kind_node_image(k8s_version: str) -> str:
    """The pinned node image for ``k8s_version`` (by minor), or the ``PROXYSUITE_KIND_NODE_IMAGE`` override."""
    override = os.environ.get("PROXYSUITE_KIND_NODE_IMAGE")
    if override:
        return override
    minor = k8s_minor(k8s_version)
    try:
        return KIND_NODE_IMAGES[minor]
    except KeyError:
        from .errors import Unsupported

        raise Unsupported(
            f"kind {KIND_VERSION} has no node image for Kubernetes {minor} (it has {', '.join(sorted(KIND_NODE_IMAGES))})",
            "pass --k8s-version for one of those, or set PROXYSUITE_KIND_NODE_IMAGE to an image you built with kind build node-image",
        ) from None


CILIUM_IMAGE_NAMES = ("quay.io/cilium/cilium", "quay.io/cilium/operator-generic")


CILIUM_SOURCE_ENV = "PROXYSUITE_CILIUM_SOURCE"
CILIUM_SOURCES = ("offline", "repo")


def cilium_source() -> str:
    """``PROXYSUITE_CILIUM_SOURCE``: ``offline`` (default: agent, operator, chart and Helm built from the pinned Go
    modules, no registry needed) or ``repo`` (helm.cilium.io's chart and quay.io's images, for machines that reach them)."""
    choice = os.environ.get(CILIUM_SOURCE_ENV) or "offline"
    if choice not in CILIUM_SOURCES:
        raise SuiteError(f"{CILIUM_SOURCE_ENV}={choice} is not a Cilium source",
                         f"set {CILIUM_SOURCE_ENV} to one of {', '.join(CILIUM_SOURCES)} or unset it")
    return choice


def cilium_images() -> list[ImageRef]:
    """quay.io's agent and operator with ``PROXYSUITE_CILIUM_SOURCE=repo``. By default the suite builds both itself
    from Go modules and Debian packages (``proxysuite kind build-cilium``, docs/cilium.md): nothing to pull. No
    Envoy either way: the suite's values turn the L7 proxy off."""
    if cilium_source() != "repo":
        return []
    v = cilium_version()
    return [
        ImageRef(f"quay.io/cilium/cilium:v{v}", "Cilium agent (kube-proxy replacement)"),
        ImageRef(f"quay.io/cilium/operator-generic:v{v}", "Cilium operator"),
    ]


def manifest_images(path: str) -> list[ImageRef]:
    """Images named in a user's proxy manifest (``--proxy-manifest``)."""
    import yaml

    found: list[ImageRef] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str):
                    found.append(ImageRef(value, f"from {os.path.basename(path)}"))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    with open(path, encoding="utf-8") as fh:
        for doc in yaml.safe_load_all(fh):
            walk(doc)
    first: dict[str, ImageRef] = {}
    for i in found:
        first.setdefault(i.ref, i)
    return list(first.values())


ALL_MODES = tuple(MODES)


def images_for(mode: str | None = None, provider: str = "kind", k8s_version: str = "v1.37.2",
               proxy_manifest: str | None = None) -> list[ImageRef]:
    """Every image a run of ``provider``/``mode`` pulls, in pull order; ``mode=None`` is every mode (no duplicates).

    ``str()`` of each entry is the pullable reference, so ``for ref in images_for(mode): print(ref)`` lists them.
    """
    if mode is None:
        seen: dict[str, ImageRef] = {}
        for m in ALL_MODES:
            for ref in images_for(m, provider, k8s_version, proxy_manifest):
                seen.setdefault(ref.ref, ref)
        return [r for r in seen.values() if r.pullable]
    from .cluster import get_provider

    return get_provider(provider).images(mode, k8s_version, proxy_manifest)


def pod_images() -> list[ImageRef]:
    """What every provider that runs real pods pulls: the client and backend images."""
    return [
        ImageRef(client_image(), "client pods and hostNetwork vantage pods (python3 runs the probe engine)"),
        ImageRef(backend_image(), "backend pods (agnhost netexec)"),
    ]


def kind_images(mode: str, k8s_version: str = "v1.37.2", proxy_manifest: str | None = None) -> list[ImageRef]:
    """A kind run of ``mode``: the node image, pod images, cloud-provider-kind and the reaper, Cilium's, the manifest's."""
    out = [ImageRef(kind_node_image(k8s_version), f"kind node image (kind {KIND_VERSION}; carries kube-proxy, CoreDNS, kindnet)"),
           *pod_images(),
           ImageRef(cloud_provider_kind_image(), "cloud-provider-kind: LoadBalancer Services (only with PROXYSUITE_KIND_LB=cloud-provider-kind)"),
           ImageRef(CLOUD_PROVIDER_KIND_ENVOY_IMAGE, "started by cloud-provider-kind for each LoadBalancer"),
           ImageRef(ryuk_image(), "testcontainers reaper for the external client container")]
    if mode == "cilium":
        out += cilium_images()
    if mode == "custom" and proxy_manifest:
        out += manifest_images(proxy_manifest)
    return out


def format_images(mode: str | None = None, provider: str = "kind", k8s_version: str = "v1.37.2",
                  proxy_manifest: str | None = None) -> str:
    """The text ``proxysuite images`` prints: each reference on its own line after a ``# purpose`` comment,
    so ``proxysuite images … | grep -v '^#' | xargs -n1 docker pull`` preloads them."""
    refs = images_for(mode, provider, k8s_version, proxy_manifest)
    if mode is None:
        refs = [r for m in ALL_MODES for r in images_for(m, provider, k8s_version, proxy_manifest)]
        refs = list({r.ref: r for r in refs}.values())
    if not refs:
        return f"# the {provider} provider pulls no images"
    lines = [f"# images for --provider {provider}" + (f" --mode {mode}" if mode else " (every mode)")]
    for r in refs:
        lines.append(f"# {r.purpose}")
        lines.append(r.ref if r.pullable else f"# {r.ref}:<tag from the chart>")
    if mode in (None, "custom") and provider == "kind" and not proxy_manifest:
        lines.append("# plus the images your proxy's manifest names (list them with: proxysuite images --mode custom --proxy-manifest PATH)")
    if provider == "kind":
        lines.append("# preload into a kind cluster: kind load docker-image --name CLUSTER IMAGE")
    return "\n".join(lines)

"""Run-scoped names and progress: what every object the suite creates is called, and how it tells the user.

Every run has a short id (:func:`new_run_id`). Everything the run creates carries it, so the run's own
teardown and the janitor find exactly its objects and nobody else's:

* Kubernetes namespaces are named by :func:`namespace_name` (``ps-<run id>-<label>[-<hash>]``) and
  labelled :data:`RUN_LABEL` ``=<run id>`` (:func:`namespace_labels`); the remote providers keep their
  node vantage pods in :func:`helper_namespace` (``proxysuite-<run id>``);
* the local provider's network namespaces start with ``ps-<run id>-`` and its processes carry
  ``PROXYSUITE_RUN_ID`` (see :mod:`proxysuite.cluster.local`).

:func:`progress` is the one line printer for "what is happening now" (bring-up takes seconds to minutes).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys

RUN_LABEL = "proxysuite.io/run-id"
"""Label on every namespace (and object) a run creates; its value is the run id."""
NAME_PREFIX = "ps-"
"""Prefix of the run's namespaces (Kubernetes and network namespaces): ``ps-<run id>-…``."""


def new_run_id() -> str:
    """Six hex digits: short enough for DNS labels and interface names, random enough for concurrent runs."""
    return secrets.token_hex(3)


def _slug(text: str, limit: int = 30) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def namespace_name(run_id: str, label: str, unique: str = "") -> str:
    """A DNS-1123 namespace name: ``ps-<run id>-<label>``, plus a hash of ``unique`` when given.

    ``label`` is the readable part (a test name, ``perf-nftables``), cut to 30 characters; ``unique``
    (a full test id, a worker pid) keeps names apart when labels collide after cutting.
    """
    name = f"{NAME_PREFIX}{run_id}-{_slug(label)}"
    if unique:
        name += "-" + hashlib.sha1(unique.encode()).hexdigest()[:6]
    return name.strip("-")


def helper_namespace(run_id: str) -> str:
    """The namespace a run keeps its own helper pods in (node vantage pods of the kind/existing providers)."""
    return f"proxysuite-{run_id}"


def namespace_labels(run_id: str, privileged: bool = False) -> dict[str, str]:
    """Labels of a run's namespace; ``privileged`` admits hostNetwork pods under Pod Security admission."""
    labels = {RUN_LABEL: run_id}
    if privileged:
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    return labels


def progress(msg: str) -> None:
    """Say what is happening, on stderr (stdout stays for what a command prints: a KUBECONFIG, JSON)."""
    print(f"[proxysuite] {msg}", file=sys.stderr, flush=True)

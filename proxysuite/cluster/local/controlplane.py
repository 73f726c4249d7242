"""The control plane of a local cluster: PKI, identities, kubeconfigs and component flags.

Identities are static bearer tokens (``--token-auth-file``). Each component
gets its own user so RBAC is real: kube-proxy is ``system:kube-proxy`` (bound to
``system:node-proxier`` by bootstrap RBAC), node agents are
``system:node:<name>`` in ``system:nodes`` (Node authorizer + NodeRestriction),
the controller-manager and scheduler use their bootstrap identities. Only the
user's kubeconfig is ``system:masters``.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ...modes import KUBE_PROXY_HEALTHZ_PORT, KUBE_PROXY_METRICS_PORT
from .state import ClusterState

APISERVER_PORT = 6443
PROXY_METRICS_PORT = KUBE_PROXY_METRICS_PORT
PROXY_HEALTHZ_PORT = KUBE_PROXY_HEALTHZ_PORT

# user -> groups; the token file line is `token,user,uid,"groups"`.
IDENTITIES = {
    "admin": ("proxysuite-admin", ["system:masters"]),
    "kube-proxy": ("system:kube-proxy", []),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    "lb-controller": ("proxysuite:lb-controller", ["system:masters"]),
}


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool, sans: list | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(st: ClusterState) -> None:
    """CA, apiserver serving cert (SANs for every address it is reached by) and the service-account key pair."""
    pki = st.pki
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "apiserver.crt").exists():
        return
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"proxysuite-ca-{st.run_id}")])
    ca = _cert(f"proxysuite-ca-{st.run_id}", ca_key, ca_name, ca_key, ca=True)
    srv_key = _key()
    a = st.addressing
    sans = [x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                     "kubernetes.default.svc.cluster.local", "localhost")]
    ips = [a.cp_ip, a.service_vip, "127.0.0.1"]
    if st.families != ("ipv4",):
        ips += [ip for ip in a.api_ips(st.families) + a.service_vips(st.families) if ip not in ips]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    srv = _cert("kube-apiserver", srv_key, ca_name, ca_key, ca=False, sans=sans)
    sa_key = _key()
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(_pem_key(ca_key))
    (pki / "apiserver.crt").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (pki / "apiserver.key").write_bytes(_pem_key(srv_key))
    (pki / "sa.key").write_bytes(_pem_key(sa_key))
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for p in pki.iterdir():
        p.chmod(0o600)


def write_identities(st: ClusterState) -> dict[str, str]:
    """Token file plus one kubeconfig per identity; returns {identity: token}."""
    idents = dict(IDENTITIES)
    for node in st.nodes:
        idents[f"node-{node.name}"] = (f"system:node:{node.name}", ["system:nodes"])
    tokens = {who: secrets.token_hex(16) for who in idents}
    lines = [f'{tokens[who]},{user},{user},"{",".join(groups)}"' for who, (user, groups) in idents.items()]
    (st.pki / "tokens.csv").write_text("\n".join(lines) + "\n")
    (st.pki / "tokens.csv").chmod(0o600)
    inside = f"https://{st.addressing.cp_ip}:{APISERVER_PORT}"
    outside = f"https://127.0.0.1:{st.api_port}"
    for who in tokens:
        # Daemons in the root namespace (node agents, LB controller, the user) go through the loopback relay;
        # those in the cp/node namespaces reach the apiserver on the fabric.
        server = inside if who in ("kube-proxy", "controller-manager", "scheduler") else outside
        write_kubeconfig(st.kubeconfig(who), server, st.pki / "ca.crt", tokens[who], context=st.name)
    # The same identity for proxies that run inside node namespaces but may be custom.
    return tokens


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, context: str) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def etcd_argv(st: ClusterState, etcd: Path) -> list[str]:
    data = st.dir / "etcd"
    return [str(etcd), "--name", "default", "--data-dir", str(data),
            "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "default=http://127.0.0.1:2380",
            # A throwaway test cluster: fsync latency would only add noise to creation-time benchmarks.
            "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3), "--log-level", "warn"]


def apiserver_address(st: ClusterState) -> tuple[str, str]:
    """(bind, advertise) addresses of kube-apiserver.

    The advertise address is the ``kubernetes`` Service's endpoint, which must be of the primary service
    family; with IPv6 the apiserver listens on every address of the cp namespace (``::`` takes IPv4 too),
    as the suite's own clients still come over IPv4."""
    a = st.addressing
    if "ipv6" not in st.families:
        return a.cp_ip, a.cp_ip
    return "::", a.api_ips(st.families)[0] if st.families[0] == "ipv4" else a.cp_ip6


def apiserver_argv(st: ClusterState, binary: Path) -> list[str]:
    a, pki = st.addressing, st.pki
    bind, advertise = apiserver_address(st)
    return [str(binary),
            "--etcd-servers=http://127.0.0.1:2379",  # given once: a repeated flag appends a second etcd
            f"--bind-address={bind}", f"--advertise-address={advertise}", f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            # Primary family first; dual-stack needs nothing else (the IPv6DualStack gate is long GA).
            f"--service-cluster-ip-range={','.join(a.service_cidrs(st.families))}", "--service-node-port-range=30000-32767",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true", "--profiling=false",
            # Nodes have no DNS names; kubectl logs reaches the node agent's /containerLogs on the InternalIP.
            "--kubelet-preferred-address-types=InternalIP",
            # 10,000-Service scale runs create objects in parallel.
            "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
            "--enable-priority-and-fairness=false"]


def controller_manager_argv(st: ClusterState, binary: Path) -> list[str]:
    pki = st.pki
    return [str(binary), f"--kubeconfig={st.kubeconfig('controller-manager')}",
            f"--authentication-kubeconfig={st.kubeconfig('controller-manager')}",
            f"--authorization-kubeconfig={st.kubeconfig('controller-manager')}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=10257",
            # Node agents set spec.podCIDR themselves (as kubelet does with --pod-cidr), so no node IPAM.
            "--controllers=*,-node-ipam-controller",
            f"--cluster-name={st.name}", "--kube-api-qps=200", "--kube-api-burst=400",
            "--concurrent-service-endpoint-syncs=10"]


def scheduler_argv(st: ClusterState, binary: Path) -> list[str]:
    kcfg = st.kubeconfig("scheduler")
    return [str(binary), f"--kubeconfig={kcfg}", f"--authentication-kubeconfig={kcfg}", f"--authorization-kubeconfig={kcfg}",
            "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=10259"]


IPTABLES_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
"""What kube-proxy execs by name from its PATH (k8s.io/kubernetes/pkg/util/iptables)."""


def iptables_backend_dir(st: ClusterState) -> Path | None:
    """A directory whose ``iptables*`` are the chosen backend's tools (``--iptables-backend``), or None.

    Put first on kube-proxy's PATH, it picks the backend for that process alone: the host's
    ``update-alternatives`` choice, and every other program on the machine, are left as they are.
    """
    if not st.iptables_backend:
        return None
    import shutil

    d = st.dir / f"iptables-{st.iptables_backend}"
    d.mkdir(parents=True, exist_ok=True)
    for tool in IPTABLES_TOOLS:
        base, _, verb = tool.partition("-")
        target = shutil.which(f"{base}-{st.iptables_backend}" + (f"-{verb}" if verb else ""), path="/usr/sbin:/sbin:/usr/bin:/bin")
        if target is None:
            from ...errors import SuiteError

            raise SuiteError(f"--iptables-backend {st.iptables_backend}: {base}-{st.iptables_backend}"
                             f"{'-' + verb if verb else ''} is not installed", "apt-get install -y iptables")
        link = d / tool
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return d


def kube_proxy_argv(st: ClusterState, binary: Path, node_name: str) -> list[str]:
    tools = iptables_backend_dir(st)
    # env execs kube-proxy in place, so the recorded PID (CPU, children's CPU) stays kube-proxy's own.
    prefix = ["env", f"PATH={tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] if tools else []
    return [*prefix, str(binary), f"--kubeconfig={st.kubeconfig('kube-proxy')}", f"--proxy-mode={st.mode}",
            # Both families' pod ranges: detect-local (ClusterCIDR) needs one per proxier, or that family masquerades nothing.
            f"--hostname-override={node_name}", f"--cluster-cidr={','.join(st.addressing.pod_cidrs(st.families))}",
            # /proc/sys/net/netfilter/nf_conntrack_max is not writable outside the initial netns.
            "--conntrack-max-per-core=0",
            f"--metrics-bind-address=127.0.0.1:{PROXY_METRICS_PORT}", f"--healthz-bind-address=0.0.0.0:{PROXY_HEALTHZ_PORT}",
            "--v=2"]


PROXY_CMD_PLACEHOLDERS = ("kubeconfig", "node", "node_ip", "cluster_cidr", "service_cidr", "metrics_addr", "healthz_addr")


def render_proxy_cmd(template: str, values: dict[str, str]) -> list[str]:
    """Fill ``--proxy-cmd``'s placeholders; an unknown one is bad input, reported before anything starts."""
    import shlex

    from ...errors import SuiteError

    try:
        return shlex.split(template.format(**values))
    except KeyError as exc:
        raise SuiteError(f"--proxy-cmd uses unknown placeholder {{{exc.args[0]}}}",
                         f"use only {', '.join('{' + k + '}' for k in PROXY_CMD_PLACEHOLDERS)}") from None
    except (ValueError, IndexError) as exc:
        raise SuiteError(f"--proxy-cmd is not a valid template ({exc})", "quote it, and write literal braces as {{ }}") from None


def proxy_cmd_values(st: ClusterState, node) -> dict[str, str]:
    """What ``--proxy-cmd``'s (and ``--proxy-health exec:``'s) placeholders stand for on ``node``."""
    return {
        "kubeconfig": str(st.kubeconfig("kube-proxy")), "node": node.name, "node_ip": node.addresses[0],
        "cluster_cidr": ",".join(st.addressing.pod_cidrs(st.families)),
        "service_cidr": ",".join(st.addressing.service_cidrs(st.families)),
        "metrics_addr": f"127.0.0.1:{PROXY_METRICS_PORT}", "healthz_addr": f"0.0.0.0:{PROXY_HEALTHZ_PORT}",
    }


def custom_proxy_argv(st: ClusterState, node) -> list[str]:
    return render_proxy_cmd(st.proxy_cmd, proxy_cmd_values(st, node))

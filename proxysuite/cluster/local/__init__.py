"""The local provider: a real control plane and real kube-proxy, with nodes and pods as network namespaces.

No Docker needed: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler run in a ``cp`` namespace, each node is a namespace running real
kube-proxy and a node agent (the one emulated part, see ``nodeagent.py``), and
an ``ext`` namespace is the client outside the cluster. See ``provider.py``.
"""

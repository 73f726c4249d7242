"""What kind needs on a machine that has none of it: a Docker engine, kind itself, and an offline node image.

::

    proxysuite kind setup-engine          # Debian's docker.io + kind v0.33.0 (Go module); starts a suite engine
    proxysuite kind build-node-image      # a kind node image for the pinned Kubernetes, from Debian + Go modules
    proxysuite kind stop-engine [--purge] # stops the suite's engine (--purge: also its images and data)

:mod:`.engine` leaves a working Docker alone; otherwise it runs a suite-owned ``dockerd`` inside a network
namespace of its own, so the engine's bridges, addresses and firewall never reach the machine's root
namespace. :mod:`.nodeimage` builds the node image (see its docstring for what goes in and why).
"""

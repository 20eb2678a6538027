"""proxyrefresh: keep a pool of working HTTP/SOCKS proxies fresh.

The core package holds what the control plane (``proxyrefresh.operator``)
and the data plane (``proxyrefresh.worker``) share: the models, the
settings and the command line.
"""

__version__ = "0.1.0"

"""`kubetune up`: the whole of Kubetune on one machine with no cluster, for trying it.

It starts the embedded control plane (API server and local kubelet), installs the CRDs, runs
the operator as its own process (`kubetune operator`: the same code and the same path through
a kubeconfig as in a cluster), applies the studies, shows their progress live and returns
them once every one has ended. With `--prometheus` it also runs a real Prometheus (the
`prometheus` binary) scraping the operator's /metrics and every trial pod's `metrics` port, which
the kubelet publishes through file-based service discovery. Nothing it started outlives it: the
operator stops first, then Prometheus, then the kubelet ends every pod process, then the API
server stops.

manifests.py reads and checks the studies, run.py runs them (`Up`), prometheus.py is the
Prometheus of `--prometheus`.
"""

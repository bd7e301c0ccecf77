"""A Kubernetes control plane on one machine: an API server emulator, a local kubelet that runs
pods as processes, and the real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) built from source.

Its public face is `kubetune_localcluster.cluster`: `make_cluster()` gives a `LocalCluster`
(the emulator) or, with `binaries=`, a `RealCluster`, both a `Cluster` (start, stop, url,
kubelet, kubeconfig, write_kubeconfig, session); `install_crds()` installs CRDs and waits until
they are served; `ClusterThread` runs a cluster beside synchronous code. The other modules are
its parts (apiserver, store, kubelet, ...), importable for tests.

The tests run the real operator (kopf) and the real kubectl against it, and `kubetune up` and
`kubetune cluster up` let a newcomer try Kubetune with no cluster. It imports nothing of
kubetune (import-linter enforces it): it knows Kubernetes, not tuning.
"""

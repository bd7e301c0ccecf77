"""An embedded Kubernetes control plane: an API server emulator and a local kubelet.

The tests run the real operator (kopf) and the real kubectl against it, and `kubetune cluster
up` lets a newcomer try Kubetune with no cluster. It imports nothing from the rest of kubetune
(import-linter enforces it): it knows Kubernetes, not tuning.
"""

"""A local kubelet for both control planes: it runs pods as processes.

It talks to the API server only over HTTP, as a real node does: it lists and watches pods,
runs their containers, PATCHes pods/status and GETs the secrets and config maps the env refers
to. On the embedded plane it is also the scheduler (it binds the pods that fit onto its one
node). On the real plane (`schedules=False`, `tls=`) kube-scheduler binds, and the kubelet
watches only its node's pods, renews its Lease, authenticates as system:node:<name>, serves
logs on its own HTTPS endpoint (node_endpoint.py), makes volumes with service-account tokens
(volumes.py) and runs the project's images by their entrypoints (images.py). The pure rules
it applies are modules of kubetune_localcluster too: requests, capacity and QoS in
quantities.py, a container's env, ports and termination file in environment.py, the pod's
phase, conditions and container statuses in pod_status.py. docs/local-kubelet.md says where
it differs from a real kubelet.

Its parts, one module each in this package: kubelet.py, the `Kubelet` that owns the others
(the pods admitted to this node, their admission and their end); client.py, its HTTP client
of the API server (`ApiRequestError`); pod_watch.py, its list and watch of pods; node.py, the
Node's registration and its Lease; scheduler.py, the embedded plane's scheduler and what the
pods hold of the node's capacity; pod_runner.py, a pod's run, deadline and stop; containers.py,
one container's process, exit and restarts; pod_config.py, the containers' env and volumes;
scrape_targets.py, the Prometheus targets; events.py, the Events it records; background.py,
the work it does not wait for.

What it emulates, and how it differs from a real node:
- Scheduling: one node with a capacity (cpu, memory, pods, any extended resource such as
  nvidia.com/gpu). Pods are tried in creation order; a pod whose requests do not fit stays
  Pending with PodScheduled=False, reason Unschedulable and the scheduler's message
  ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."), and is bound when resources
  free up. nodeSelector, affinity, taints and tolerations are not considered. A pod created
  already bound to this node is admitted, or rejected (phase Failed, reason OutOf<resource>)
  when it does not fit, as the kubelet's admission does.
- Containers: the image is not pulled; each container's `command` + `args` run as a local
  process, init containers one after the other, then all containers at once. Each runs under
  an init of its own (processes.py, podinit.py), a subreaper that stands in for the
  container's PID namespace: what the command starts stays below it, children that setsid or
  double-fork included, and when the command's process ends the rest are killed; the
  containerID is process://<the init's pid>. A container without `command` cannot fall back
  to an image's entrypoint: the pod fails, the container terminated with exit code 128 and
  reason CommandRequired. An executable that cannot be started gives reason StartError, exit
  code 128, as containerd does. `workingDir`, volumes, probes, resource limits and sidecar
  init containers are not emulated: a container is ready once its process runs.
- Files: each pod gets a folder under the workdir holding per-container logs
  (`<container>.<restartCount>.log`, stdout and stderr combined), the termination-message
  files and a kubeconfig.
- Env: the process inherits the kubelet's environment (PATH, a virtualenv), then gets
  KUBERNETES_SERVICE_HOST/PORT pointing at the API server, HOSTNAME (spec.hostname when
  set, else the pod name, cut to 63 characters as a kubelet does),
  KUBECONFIG (a kubeconfig in the pod folder for the API server's URL: plain HTTP, and the
  kubelet's `token`) and then the spec's envFrom and env: value with $(VAR) expansion, fieldRef
  (metadata.name, namespace, uid, labels, annotations, labels['k'], annotations['k'],
  spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP: 127.0.0.1),
  secretKeyRef and configMapKeyRef (optional honoured). A missing secret or config map keeps
  the container waiting with reason CreateContainerConfigError and is retried, as Kubernetes
  does. On the embedded plane no token file is written: in-cluster clients use KUBECONFIG
  (with the emulator's token). On the real plane a pod gets no KUBECONFIG: its projected
  service-account volume carries a bound token, as in a cluster.
- Termination message: a process cannot write /dev/termination-log on a shared host, so each
  container's terminationMessagePath is mapped to a file in the pod folder, and any env value
  equal to the terminationMessagePath is rewritten to the mapped file's path. The file's last
  4096 bytes become the terminated state's message; with FallbackToLogsOnError an empty file
  and a failed container give the log's tail (80 lines, 2048 bytes) instead.
- Status: phase Pending -> Running -> Succeeded/Failed, the conditions PodScheduled,
  Initialized, ContainersReady and Ready, container statuses, startTime, podIP and hostIP
  127.0.0.1. restartPolicy OnFailure and Always restart containers with a back-off starting at
  1 s (Kubernetes starts at 10 s) and doubling up to 5 minutes, counting restartCount.
  activeDeadlineSeconds counts from startTime: the processes are stopped (SIGTERM, then
  SIGKILL after the spec's terminationGracePeriodSeconds, at least 1 s as a kubelet gives) and
  the pod fails with reason DeadlineExceeded, its object and logs kept. A running pod's
  deadline may be lowered (the API refuses raising or removing it): the kubelet re-arms it
  from startTime, or stops the pod at once when the new deadline is already past. As the
  kubelet's status manager does, the phase stays Running until every process has ended;
  Failed and the reason come together.
- Deletion: once a pod has a deletionTimestamp every process of it gets SIGTERM, then SIGKILL
  after deletionGracePeriodSeconds (else terminationGracePeriodSeconds, else 30), as the
  kubelet does; the final status is written and the pod object deleted with
  gracePeriodSeconds=0. A pod that disappears outright is killed at once. `stop()` ends every
  process (SIGTERM, then SIGKILL after at most STOP_GRACE_SECONDS): none outlives it, nor a
  kubelet that is SIGKILLed (the inits' parent-death signal).
- Ports and Prometheus: every process shares the host's network, so each declared
  containerPort is given a free loopback port of its own (`host_ports`), and an env var whose
  name ends in PORT and whose value is that containerPort is rewritten to it (as the
  terminationMessagePath is mapped). Pods of one namespace that set the same `spec.subdomain`
  (an Indexed Job's pods behind a headless Service) stand for pods with IPs of their own: they
  share the loopback port of each containerPort number, which the first of them to start
  allocates and which is freed once every process of the last pod holding it has ended, so
  exactly one of them (a rendezvous server) can listen on it and the others connect to it;
  metrics endpoints (below) stay per pod. An env value that is the DNS name of a pod of the
  subdomain (`<label>.<subdomain>`, with `.<namespace>.svc` and `.svc.cluster.local`, any DNS
  label) is rewritten to 127.0.0.1, as there is no cluster DNS; `name:port` values are not.
  With a `service_discovery_dir`, the metrics endpoints of
  running pods (ports named `metrics`, or the port of annotation prometheus.io/port) are
  published for Prometheus's file-based service discovery: one `<namespace>_<pod>.json` per
  pod, targets `127.0.0.1:<port>` labelled namespace, pod, container and the pod's labels
  (names sanitized: kubetune.io/study becomes kubetune_io_study), removed when the pod ends.
- Resilience: a watch that ends is re-established from the last resourceVersion; 410 Gone
  relists; failed requests and status conflicts are retried.
"""

from kubetune_localcluster.kubelet.client import KUBELET_USER_AGENT, ApiRequestError
from kubetune_localcluster.kubelet.kubelet import Kubelet
from kubetune_localcluster.kubelet.node import DEFAULT_NODE_NAME

__all__ = ["DEFAULT_NODE_NAME", "KUBELET_USER_AGENT", "ApiRequestError", "Kubelet"]

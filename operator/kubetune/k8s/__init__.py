"""Kubernetes adapters: they translate pod and TuningTrial objects into controller input and
the controller's Plans into API calls. No tuning decision is made here.

`pods.observe_pod` reads a trial's pod (a plain dict, as the API returns it) into the
`PodObservation` the controller decides on.
"""

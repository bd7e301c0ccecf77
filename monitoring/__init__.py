"""Kubetune's Prometheus and Grafana assets as code: the dashboard generator
(`python -m monitoring.dashboard`) whose output the Helm chart ships."""

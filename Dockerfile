# The Kubetune operator image: `kubetune` on a slim Python, non-root, runtime dependencies only.
# No Docker engine runs on the development or CI machines, so this image is not built there;
# build it where one runs:
#   docker build -t ghcr.io/kubetune/kubetune:0.1.0 .
# hadolint checks this file in the test command.

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY report ./report
# torch (used by the gp sampler) from PyTorch's CPU index: the default one holds the CUDA build,
# gigabytes the operator never uses. kubetune-report (the trial contract's names) is built from
# report/ in the same command.
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
      --extra-index-url https://download.pytorch.org/whl/cpu ./report .

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="kubetune" \
      org.opencontainers.image.description="Hyperparameter tuning operator for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels kubetune==0.1.0 && rm -rf /wheels
# A numeric non-root user, so that runAsNonRoot can verify it.
USER 65532:65532
ENV PYTHONUNBUFFERED=1
# The entrypoint is `kubetune operator`; the Helm chart passes its own arguments.
ENTRYPOINT ["kubetune", "operator"]
# Liveness on :8080/healthz for the Deployment's probes; Prometheus metrics on :8000/metrics.
EXPOSE 8000 8080
CMD ["--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "8000"]

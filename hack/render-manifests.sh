#!/usr/bin/env bash
# manifests/ is rendered from the chart (one source of truth); a test fails
# when they drift. Run after changing the chart or the models.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$(bash hack/tools.sh --path):$PATH"
.venv/bin/python -m proxyrefresh.operator.crd > manifests/crd.yaml
.venv/bin/python -m proxyrefresh.operator.crd refresh > charts/proxyrefresh/crds/proxyrefresh.dev_proxyrefreshes.yaml
.venv/bin/python -m proxyrefresh.operator.crd pool > charts/proxyrefresh/crds/proxyrefresh.dev_proxypools.yaml
.venv/bin/python -m tests.harness.values_schema   # descriptions from values.yaml's comments
{
  echo "# Rendered from charts/proxyrefresh by hack/render-manifests.sh; do not edit."
  echo "# Needs: kubectl apply -f manifests/crd.yaml, a namespace 'proxyrefresh' and a"
  echo "# Secret 'proxyrefresh-redis' there with key 'url' (the Redis URL)."
  helm template proxyrefresh charts/proxyrefresh --namespace proxyrefresh \
    --set redis.existingSecret=proxyrefresh-redis
} > manifests/install.yaml

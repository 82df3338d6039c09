#!/usr/bin/env bash
# Render the Helm chart offline and validate every manifest against the Kubernetes schemas (issue 6):
# once with the default values, once per values file in charts/portcullis/ci/ (all features on),
# then check that the chart refuses configurations that would break at run time.
# Needs ../shared beside the repository (shared/tools/chart-check); CHART_CHECK overrides the path.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool=${CHART_CHECK:-$root/../shared/tools/chart-check/chart-check}
chart=$root/charts/portcullis

if [[ ! -x $tool ]]; then
  echo "chart-check: $tool not found (shared/ is expected beside the repository)" >&2
  exit 1
fi

echo "== chart-check: default values"
"$tool" "$chart"

for values in "$chart"/ci/*.yaml; do
  echo "== chart-check: -f ${values#"$root"/}"
  "$tool" "$chart" -f "$values"
done

# refused WHAT EXPECTED-MESSAGE RENDER-ARGS...: the chart must fail, and for the expected reason.
refused() {
  local what=$1 expected=$2 out
  shift 2
  if out=$("$tool" "$chart" "$@" 2>&1); then
    echo "chart-check: the chart accepted $what ($*)" >&2
    exit 1
  fi
  if [[ $out != *"$expected"* ]]; then
    echo "chart-check: $what failed, but not with \"$expected\":" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "== chart-check: refused $what"
}
refused "a misspelled value" "Additional property readines is not allowed" --set probes.readines.type=grpc
refused "an AuthorizationPolicy covering Portcullis itself" "needs a selector" --set istio.authorizationPolicy.enabled=true
refused "a grace period shorter than the drain" "must cover shutdown.drainDelay" --set terminationGracePeriodSeconds=5
refused "both a Secret and a ConfigMap for the API keys" "not both" \
  --set apiKeysFile.existingSecret=a --set apiKeysFile.existingConfigMap=b

refused "a PrometheusRule selector that is not PromQL label matchers" "metrics.prometheusRule.selector" \
  --set metrics.prometheusRule.selector='namespace=x'
refused "a heap ceiling too small to run" "maxHeapMb: Must be greater than or equal to 64" --set maxHeapMb=32

# The V8 heap settings reach the container, and an explicit NODE_OPTIONS replaces them (never both).
rendered=$("$tool" --render "$chart")
if [[ $rendered != *'value: "--max-old-space-size=160 --max-semi-space-size=2"'* ]]; then
  echo "chart-check: the default values do not pass --max-old-space-size=160 --max-semi-space-size=2 to Node" >&2
  exit 1
fi
rendered=$("$tool" --render "$chart" --set maxSemiSpaceMb=null)
if [[ $rendered != *'value: "--max-old-space-size=160"'* ]]; then
  echo "chart-check: maxSemiSpaceMb=null must leave only the heap ceiling" >&2
  exit 1
fi
rendered=$("$tool" --render "$chart" -f "$chart/ci/all-features-values.yaml")
if [[ $(grep -c 'name: NODE_OPTIONS' <<<"$rendered") != 1 || $rendered == *'max-old-space-size=160'* ]]; then
  echo "chart-check: env NODE_OPTIONS must replace the chart's heap ceiling" >&2
  exit 1
fi
echo "== chart-check: V8 heap settings rendered (default, semi-space off, and replaced by env NODE_OPTIONS)"

# With TLS on the gRPC port the readiness probe is HTTP: the kubelet's gRPC probe speaks plaintext only.
rendered=$("$tool" --render "$chart" --set tls.enabled=true --set tls.secretName=portcullis-tls -s templates/deployment.yaml)
if [[ $rendered == *'grpc:'* || $rendered != *'path: /readyz'* ]]; then
  echo "chart-check: with tls.enabled the readiness probe must be httpGet /readyz, not grpc" >&2
  exit 1
fi
rendered=$("$tool" --render "$chart" -s templates/deployment.yaml)
if [[ $rendered != *'grpc:'* ]]; then
  echo "chart-check: without TLS the default readiness probe is grpc" >&2
  exit 1
fi
echo "== chart-check: readiness probe is HTTP when the gRPC port speaks TLS"

# The helm test pod must complete under Istio injection: no sidecar.
rendered=$("$tool" --render "$chart" -f "$chart/ci/all-features-values.yaml" -s templates/tests/test-connection.yaml)
if [[ $(grep -c 'sidecar.istio.io/inject: "false"' <<<"$rendered") != 2 ]]; then
  echo "chart-check: the helm test pod is not labelled and annotated out of Istio sidecar injection" >&2
  exit 1
fi
echo "== chart-check: helm test pod opted out of sidecar injection"

# The dashboard ConfigMap carries valid JSON, and the alert selector reaches every expression.
rendered=$("$tool" --render "$chart" -f "$chart/ci/all-features-values.yaml" -s templates/grafana-dashboard.yaml)
node -e 'const y = require("fs").readFileSync(0, "utf8"); const m = /portcullis\.json: \|-\n((?:    .*\n?)*)/.exec(y); JSON.parse(m[1].replace(/^    /gm, ""));' <<<"$rendered" || {
  echo "chart-check: the dashboard ConfigMap does not hold valid JSON" >&2
  exit 1
}
rendered=$("$tool" --render "$chart" -f "$chart/ci/all-features-values.yaml" -s templates/prometheusrule.yaml)
selectors=$(grep -o '[a-z_]*{' <<<"$rendered" | grep -c '^portcullis_' || true)
applied=$(grep -o '[a-z_]*{namespace="portcullis", job="authz"' <<<"$rendered" | grep -c '^portcullis_' || true)
if [[ $rendered == *PORTCULLIS_SELECTOR* || $selectors == 0 || $selectors != "$applied" ]]; then
  echo "chart-check: the PrometheusRule selector was not applied to every alert ($applied of $selectors)" >&2
  exit 1
fi
echo "== chart-check: dashboard JSON valid, alert selector applied"

# The HTTP authorization listener: no port anywhere unless enabled; enabled, the flag, the container
# port, the Service port and the NetworkPolicy rule all appear.
rendered=$("$tool" --render "$chart" --set networkPolicy.enabled=true)
if [[ $rendered == *authz-http* ]]; then
  echo "chart-check: the HTTP authorization port is rendered while authzHttp.enabled is false" >&2
  exit 1
fi
rendered=$("$tool" --render "$chart" --set networkPolicy.enabled=true --set authzHttp.enabled=true)
if [[ $rendered != *'- --authz-http-port'* || $(grep -c 'authz-http$' <<<"$rendered") != 4 ]]; then
  echo "chart-check: authzHttp.enabled must pass --authz-http-port and expose authz-http in the pod, Service and NetworkPolicy" >&2
  exit 1
fi
echo "== chart-check: HTTP authorization port only when enabled"

echo "chart-check: ok"

#!/usr/bin/env bash
# Puts the Gateway API's standard-channel CRDs of one release into the chart,
# as charts/sluicegate/gateway-api/standard-install.yaml, for
# gatewayAPI.installCRDs. Run it before packaging the chart; the file is not
# kept in the repository.
#
#   scripts/fetch-gateway-api-crds.sh              # downloads from GitHub
#   scripts/fetch-gateway-api-crds.sh --from DIR   # a checkout's config/crd/standard
#
# Every file is checked against the SHA-256 recorded below for the release, so
# a changed or truncated download fails instead of landing in the chart.
set -euo pipefail

VERSION=v1.6.1
BASE="https://raw.githubusercontent.com/kubernetes-sigs/gateway-api/${VERSION}/config/crd/standard"
# sha256sum of config/crd/standard/* at tag v1.6.1.
SUMS='
0d48c9e4b53dd9510cf615b9b1192d9d7afb07a1cc0498c9515627cb1c075419  gateway.networking.k8s.io_backendtlspolicies.yaml
53710048ba26f8620eed59d5e51b157ecf040daf5c6eef31a4b991e0808c4be5  gateway.networking.k8s.io_gatewayclasses.yaml
25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a  gateway.networking.k8s.io_gateways.yaml
53a8d029da8f07e55d3fa58a5cf6de5950dab19fbb8d6a8082fb5e51ca5ef6fc  gateway.networking.k8s.io_grpcroutes.yaml
a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852  gateway.networking.k8s.io_httproutes.yaml
bf4d4b02564999b2558b96e31465129895db9b3a8adfb90adb9c80eac52a3a70  gateway.networking.k8s.io_listenersets.yaml
8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3  gateway.networking.k8s.io_referencegrants.yaml
d5104d0cf30e924f5e3c9e2e76abd46876401c34ca33b9e79321523eee78c7f6  gateway.networking.k8s.io_tcproutes.yaml
bb8b67926e5d9652cbfd2e19063b7c1d9e78806c9dd671608f57baef2f2e3bbb  gateway.networking.k8s.io_tlsroutes.yaml
4b80684c2bf8ef4b0a2a3ab45164ac9f96258fc69912645ff50ced595b0aa6de  gateway.networking.k8s.io_udproutes.yaml
'

from=""
if [[ "${1:-}" == "--from" ]]; then
  from="${2:?--from needs a directory}"
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/charts/sluicegate/gateway-api"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

while read -r sum file; do
  [[ -z "$file" ]] && continue
  if [[ -n "$from" ]]; then
    cp "$from/$file" "$work/$file"
  else
    curl -fsSL --retry 3 -o "$work/$file" "$BASE/$file"
  fi
  echo "$sum  $work/$file" | sha256sum --check --quiet -
done <<<"$SUMS"

mkdir -p "$out"
{
  echo "# Gateway API ${VERSION}, standard channel: config/crd/standard of"
  echo "# https://github.com/kubernetes-sigs/gateway-api at ${VERSION}."
  while read -r _ file; do
    [[ -z "$file" ]] && continue
    echo "---"
    cat "$work/$file"
  done <<<"$SUMS"
} >"$out/standard-install.yaml"
echo "wrote ${out#"$root"/}/standard-install.yaml (Gateway API ${VERSION})"

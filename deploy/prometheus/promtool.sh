#!/usr/bin/env bash
# Builds promtool into ./bin (once per version) and checks and unit-tests the Prometheus
# configuration in this folder: `promtool check rules`, `check config`, `test rules`.
#   bash deploy/prometheus/promtool.sh             install if needed, then check + test
#   bash deploy/prometheus/promtool.sh install     install only (also --install)
#   PROMTOOL=/usr/bin/promtool bash deploy/prometheus/promtool.sh   use that promtool instead
# promtool comes from the Go module proxy (no prebuilt download); a cold module cache takes
# about 9 minutes on 2 cores (downloads ~150 modules), a warm one well under a minute.
set -euo pipefail
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${PROMTOOL:-$root/bin/promtool}"
here="$root/deploy/prometheus"

installed_version() {
  [ -x "$bin" ] || return 0
  go version -m "$bin" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/prometheus/prometheus" { print $3 }'
}

if [ -z "${PROMTOOL:-}" ] && [ "$(installed_version)" != "$PROMTOOL_VERSION" ]; then
  echo "installing promtool $PROMTOOL_VERSION into $root/bin" >&2
  start=$(date +%s)
  GOBIN="$root/bin" go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  echo "promtool installed in $(( $(date +%s) - start ))s" >&2
fi
case "${1:-}" in --install | install) exit 0 ;; esac

"$bin" check rules "$here/alerts.yml"
"$bin" check config "$here/prometheus.yml"
cd "$here" && "$bin" test rules alerts_test.yml

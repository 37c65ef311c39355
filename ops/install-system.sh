#!/usr/bin/env bash
# Installs what the tests and the demo need beyond the app venv: Debian packages and the
# separate venvs (ERP server, tooling). Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the ops-page test's browser
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start system services we do not use; stop them if they run.
  (service nginx stop || true) >/dev/null 2>&1
  (service prometheus stop || true) >/dev/null 2>&1
fi
for script in ops/erp/install.sh ops/kafka/install.sh .ci/install-k8s-tools.sh; do
  if [ -f "$script" ]; then bash "$script"; fi
done

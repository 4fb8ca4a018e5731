#!/usr/bin/env bash
# Run the benchmarks from the repository root: bench/run.sh [--quick] [--only hit,miss,...]
# Python: $PYTHON if set, else .venv/bin/python if present, else python3 on PATH; it needs
# the project installed (pip install -e .). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
if ! "$python" -c "import gateway, starlette, uvicorn, httpx, PIL" 2>/dev/null; then
    echo "bench: $python cannot import the project; run: $python -m pip install -e ." >&2
    exit 2
fi
exec "$python" -m bench "$@"

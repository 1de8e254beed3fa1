#!/usr/bin/env bash
# One-command setup for diffit_hf: system packages, a virtual environment, PyTorch, then the package.
# Usage: bash scripts/setup.sh            (creates .venv in the repository root)
#        VENV=/path/to/venv bash scripts/setup.sh
#        TORCH_SPEC="torch==2.13.0" bash scripts/setup.sh   (pick another torch build, e.g. a CUDA one)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

# 1. System packages from Debian: Fashion-MNIST (the offline demo dataset) and Chromium (the app's browser test,
#    driven by Playwright). Skipped where apt is absent or we are not root; the data loader then tells the user how to
#    install the dataset, and the browser test is skipped, naming the package.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    missing=()
    [ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
else
    echo "setup: apt-get unavailable or not root; skipping dataset-fashion-mnist and chromium (install them yourself)." >&2
fi

# 2. Virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip

# 3. PyTorch first, so that nothing else pulls in a different (e.g. multi-GB CUDA) build.
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"

# 4. The package with its test and dev extras (editable), and the app extra (gradio, for pipelines/app.py) only if
#    pip's resolver installs no torch for it: that would replace the build of step 3. Without it the app's tests skip.
extras="test,dev"
report="$(mktemp)"
"$VENV/bin/python" -m pip install -q --dry-run --report "$report" -e ".[app]"
if "$VENV/bin/python" -c "import json, sys; sys.exit(any(item['metadata']['name'].lower() == 'torch'
                          for item in json.load(open(sys.argv[1]))['install']))" "$report"; then
    extras="$extras,app"
else
    echo "setup: gradio would install another torch; skipping the app extra (pipelines/app.py)." >&2
fi
rm -f "$report"
"$VENV/bin/python" -m pip install -q -e ".[$extras]"

# 5. clean-fid for Inception FID, without its dependencies: its metadata asks for torchvision (which would pull
#    another torch), but the TorchScript Inception loader we use (cleanfid.inception_torchscript) does not import it.
"$VENV/bin/python" -m pip install -q --no-deps "clean-fid==0.1.35"

"$VENV/bin/python" -c "import torch, diffusers, diffit_hf; print('setup ok: torch', torch.__version__, \
'diffusers', diffusers.__version__, 'diffit_hf', diffit_hf.__version__)"

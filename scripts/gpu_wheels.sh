#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels scripts/gpu_checks.sh needs on the lent GPU machine, into
# the ignored folder .whl/ (python 3.12, manylinux x86_64). The machine's image has torch, accelerate, timm,
# safetensors, tokenizers, huggingface-hub and pytest; these are the packages it lacks or holds in another
# version than this project's, at the versions installed here. Then, for example:
#   run(command="bash scripts/gpu_checks.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
for name in diffusers open_clip_torch ftfy wcwidth importlib_metadata zipp regex transformers plotly narwhals; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$(version "$name")"
done
du -sh .whl

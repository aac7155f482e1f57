#!/usr/bin/env bash
# The prepared GPU check of issue 12 (point 5), in one go, on a machine with one CUDA GPU; run it from the
# repository root:   bash benchmarks/gpu_check.sh [OUT_DIR]        (OUT_DIR: default $OUT, else ./gpu-check)
#
# On the lent H200 machine (the device tool), with a limit that leaves room for the machine's start:
#   run(command="bash benchmarks/gpu_check.sh $OUT", timeout_s=420)
# Nothing to install there: its python3 has torch with CUDA, lightning, transformers, torchmetrics, safetensors,
# pillow, pyyaml and numpy, and this checkout runs uninstalled (PYTHONPATH; Hugging Face's `evaluate` is not
# there to shadow ours). Elsewhere: a CUDA build of torch, then `pip install -e .` in this checkout.
#
# Writes OUT_DIR/env.txt (GPU, driver, library versions), OUT_DIR/gpu-table.txt (the table and its notes, as
# printed), OUT_DIR/gpu.log (progress: one line per measured run) and OUT_DIR/gpu.json (every figure and run
# record, results.json format; written at the end). `python -m benchmarks gpu` keeps its cells within
# --budget-s (240 s) and ends within 5 minutes; the timeout below (GPU_CHECK_TIMEOUT, 330 s) is the backstop.
# Exit status: the check's (0), 2 when this machine cannot run it (no CUDA, a package missing), 124 on timeout.
set -u -o pipefail
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/env.txt" 2>&1
else
    echo "nvidia-smi: not found" >"$out/env.txt"
fi
"$py" - >>"$out/env.txt" 2>&1 <<'EOF'
import importlib.util, sys
need = ("torch", "lightning", "transformers", "torchmetrics", "safetensors", "PIL", "yaml", "numpy", "huggingface_hub")
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    print(f"error: {sys.executable} lacks {', '.join(missing)}: install them (pip install -e . in this checkout)")
    sys.exit(2)
import torch, lightning, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}), lightning {lightning.__version__}, transformers {transformers.__version__}")
import evaluate.api  # ours, not Hugging Face's library
if not torch.cuda.is_available():
    print("error: torch sees no CUDA GPU here: the check would only run its CPU smoke mode")
    sys.exit(2)
print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF
rc=$?
cat "$out/env.txt"
if [ $rc -ne 0 ]; then exit 2; fi

timeout -k 15 "${GPU_CHECK_TIMEOUT:-330}" "$py" -m benchmarks gpu --output "$out/gpu.json" \
    --workdir "${TMPDIR:-/tmp}" >"$out/gpu-table.txt" 2>"$out/gpu.log"
rc=$?
grep -E '^  |^gpu:|rror' "$out/gpu.log" | tail -n 60
cat "$out/gpu-table.txt"
[ $rc -eq 124 ] && echo "gpu_check: stopped at the ${GPU_CHECK_TIMEOUT:-330} s limit (per-run lines above)"
exit $rc

#!/usr/bin/env bash
# bench on a real GPU: predicts, then sweeps full fine-tuning, LoRA and QLoRA on CUDA (each cell in its own
# process) with the monitor and the tensor accounting on, prints every metric and monitor tag of each run
# (tensor peak by category, peak allocated/reserved per phase, NVML, training-only energy) and the head of
# a timeline, then runs the tests marked `gpu`. Bounded to ~9.5 minutes in all (each step gets what is left).
#
#   scripts/cuda_check.sh                        # MiniLM on the packaged tweets, 1 epoch each
#   PYTHON=.venv/bin/python scripts/cuda_check.sh trainer.batch_size=32
#
# Needs a CUDA build of torch with bench installed (e.g. `BENCH_TORCH=torch nox -s tests`, or
# `pip install -e . torch`); the default model and data ship on PyPI, so nothing is downloaded.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d -t bench-cuda-XXXX)}
STORE="sqlite:///$OUT/mlflow.db"
export HF_HUB_OFFLINE=1 BENCH_CACHE="$OUT/cache" TQDM_DISABLE=1
DEADLINE=$((SECONDS + 570))
status=0

step() {  # run a command in what is left of the time budget; remember failures, keep going
  local left=$((DEADLINE - SECONDS))
  if ((left < 30)); then echo "SKIPPED (time budget spent): $*"; status=1; return; fi
  timeout "$left" "$@" || { echo "FAILED ($?): $*"; status=1; }
}

echo "== device ($(date -u +%FT%TZ), output in $OUT)"
nvidia-smi --query-gpu=index,name,pci.bus_id,uuid,memory.total,driver_version --format=csv || true
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>} CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER-<unset>}"
"$PY" - <<'EOF' || exit 1
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device: install a CUDA build of torch"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} cuda {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.1f} GiB, "
      f"pci {getattr(p, 'pci_domain_id', '?')}:{getattr(p, 'pci_bus_id', '?')}:{getattr(p, 'pci_device_id', '?')}, "
      f"uuid {getattr(p, 'uuid', '?')}")
EOF

echo "== predictions (dry runs: nothing loads or trains)"
for method in full lora qlora; do
  step "$PY" -m bench.cli run "method=$method" trainer.device=cuda dry_run=true "hydra.run.dir=$OUT/dry-$method" "$@"
done

echo "== runs: one sweep, each cell in a fresh process (as the demo runs them)"
step "$PY" -m bench.cli run -m method=full,lora,qlora trainer.device=cuda trainer.epochs=1 "tracker.uri=$STORE" \
  tracker.log_model=false "hydra.sweep.dir=$OUT/sweep" "$@"

echo "== every metric and monitor tag, per run"
"$PY" - "$STORE" <<'EOF' || status=1
import sys

import mlflow

store = sys.argv[1]
client = mlflow.MlflowClient(store)
mlflow.set_tracking_uri(store)
runs = [r for r in mlflow.search_runs(experiment_names=["bench"], output_format="list")
        if r.data.tags.get("sweep_role") != "parent"]
for run in sorted(runs, key=lambda r: r.data.tags.get("technique", "")):
    print(f"\n--- {run.data.tags.get('technique')} {run.info.run_name} {run.info.status}")
    for key in sorted(run.data.metrics):
        print(f"  {key:40s} {run.data.metrics[key]:.6g}")
    for key in sorted(run.data.tags):
        if key.startswith(("monitor/", "mem/", "gpu/", "precision/", "hw/gpu", "process/pid", "failure", "error")):
            print(f"  tag {key:36s} {run.data.tags[key]}")
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "monitor")]
    print(f"  artifacts: {artifacts}")
if runs:
    path = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="monitor/timeline.csv")
    lines = open(path).read().splitlines()
    print(f"\n--- timeline of {runs[0].info.run_name}: {len(lines) - 1} samples; first and last rows")
    print("\n".join(lines[:4] + ["..."] + lines[-3:]))
EOF

echo "== tests marked gpu"
step "$PY" -m pytest tests -m gpu -q -p no:cacheprovider

echo "== done in ${SECONDS}s, status $status"
exit $status

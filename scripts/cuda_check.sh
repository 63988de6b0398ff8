#!/usr/bin/env bash
# bench on a real GPU, as one bounded script (~9 minutes): plans, then trains full fine-tuning, LoRA and QLoRA
# on CUDA (each sweep cell in its own process) with the monitor and the tensor accounting on, checks the fit
# boundary (the plan's largest batch under a cap on the allocator finishes, 25 % more runs out of memory), and
# prints, per run, its own plan at the batch it met beside what it measured: the tensor peak, the allocator's
# peak, reserved, NVML's view of the process, tokens/s and training-only energy. Then the memory levers (gradient
# checkpointing, 8-bit and paged optimizers), one run on two processes (DDP, FSDP) and the tests marked `gpu`. The MLflow store comes back as
# $OUT/store.tar.gz, so `bench report` can be built from it on any machine.
#
#   scripts/cuda_check.sh                         # everything, in the time budget
#   BUDGET=300 STEPS=minilm,plan scripts/cuda_check.sh
#
# The models are random-init at real shapes (MiniLM-L6's; SmolLM2-135M's with MiniLM's 30,522-token
# vocabulary), built from their config on the spot: memory and speed depend on shapes, not on weight values,
# and a GPU machine with no internet and a 64 MiB transfer cannot fetch or carry the pretrained weights.
# Accuracy figures of these runs are therefore not the models'. Needs a CUDA build of torch with bench's
# dependencies (scripts/device_wheels.sh bundles the ones a bare CUDA image lacks).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t bench-cuda-XXXX)}
WORK=$(mktemp -d -t bench-work-XXXX)  # the store, its artifacts and Hydra's folders: out of the checkout
STORE="sqlite:///$WORK/mlflow.db"
STEPS=${STEPS:-plan,minilm,boundary,dist,smollm2,levers,profile,1b,tests}
export HF_HUB_OFFLINE=1 BENCH_CACHE="$WORK/cache" TQDM_DISABLE=1 PYTHONUNBUFFERED=1
# these runs log what no CPU test reaches (CUDA memory, NVML, energy): a name bench.core.metrics does not define
# fails its step here, as it fails the tests
export BENCH_STRICT_METRICS=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
DEADLINE=$((SECONDS + ${BUDGET:-520}))
status=0
cd "$WORK" || exit 1

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }
step() {  # run a command in what is left of the time budget; remember failures, keep going
  local left=$((DEADLINE - SECONDS))
  if ((left < 20)); then echo "SKIPPED (time budget spent): $*"; status=1; return; fi
  echo "+ [$SECONDS s] ${*:0:12} ..."
  timeout "$left" "$@" || { echo "FAILED ($?): $*"; status=1; }
}
bench() { step "$PY" -m bench.cli "$@"; }

# Real shapes, random weights (see the header). tiny-bert/tiny-llama are the random-init model kinds.
MINILM=(model=tiny-bert model.architecture.hidden_size=384 model.architecture.num_hidden_layers=6
        model.architecture.num_attention_heads=12 model.architecture.intermediate_size=1536
        model.architecture.max_position_embeddings=512)
SMOLLM2=(model=tiny-llama model.architecture.hidden_size=576 model.architecture.num_hidden_layers=30
         model.architecture.num_attention_heads=9 model.architecture.num_key_value_heads=3
         model.architecture.intermediate_size=1536 model.architecture.max_position_embeddings=2048
         data.max_length=256 data.max_train_samples=2048
         data.max_eval_samples=128 data.general_eval_chunks=4 trainer.eval_batch_size=16)

echo "== device ($(date -u +%FT%TZ); output in $OUT, work in $WORK)"
nvidia-smi --query-gpu=index,name,memory.total,driver_version,power.limit --format=csv || true
"$PY" - <<'EOF' || exit 1
import importlib.metadata as md
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device: install a CUDA build of torch"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} cuda {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.1f} GiB, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
for name in ("transformers", "peft", "bitsandbytes", "accelerate", "mlflow-skinny", "hydra-core", "hqq",
             "nvidia-ml-py", "datasets", "pandas"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import bitsandbytes as bnb
w = torch.randn(256, 256, dtype=torch.bfloat16, device="cuda")
q, state = bnb.functional.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
back = bnb.functional.dequantize_4bit(q, state)
print(f"  bitsandbytes nf4 on cuda: max |w - dq(q(w))| = {(w - back).abs().max().item():.4f}")
EOF

if wanted plan; then
  echo "== bench plan (fake tensors; nothing loads) for an H200; every run below logs its own plan too"
  bench plan --gpu h200 "${MINILM[@]}" method=full,lora,qlora
  echo "== dry run on this GPU: the same plan, from bench run"
  bench run "${MINILM[@]}" method=qlora trainer.device=cuda dry_run=true "hydra.run.dir=$WORK/dry"
fi

if wanted minilm; then
  echo "== MiniLM-shaped classifier: full, LoRA, QLoRA, one sweep, each cell in a fresh process"
  bench run -m "${MINILM[@]}" method=full,lora,qlora trainer.device=cuda trainer.epochs=1 \
    data.max_train_samples=8192 data.max_eval_samples=1024 "tracker.uri=$STORE" tracker.log_model=false \
    tracker.experiment=cuda-minilm "hydra.sweep.dir=$WORK/minilm"
fi
if wanted boundary; then
  # "Will it fit", answered by what runs out: each run's process caps torch's allocator at the budget
  # (set_per_process_memory_fraction); the plan's largest batch for it (bench plan's 10 % headroom kept free, the
  # terms beyond the tensors from the minilm runs just stored) must finish, 25 % more must end failure=oom.
  echo "== the fit boundary: the plan's largest batch under a 1 GiB cap on the allocator, and 25 % more"
  step "$PY" "$REPO/benchmarks/fit_boundary.py" --store "$STORE" --budget-mib 1024 --device cuda "${MINILM[@]}" \
    data.max_length=64
fi
if wanted dist; then
  # One GPU: DDP runs two ranks on it through gloo (NCCL refuses two ranks on one device; gloo all-reduces and
  # broadcasts CUDA tensors, through the host), which runs the CUDA code path (each rank's device, DDP's CUDA-event
  # all-reduce timing, QLoRA's 4-bit base under DDP), not NCCL's speed. FSDP needs all-gather and reduce-scatter,
  # which gloo lacks for CUDA tensors: it runs as one rank on NCCL (fully_shard, DTensors and FSDP's streams on
  # CUDA, nothing actually sharded), and two ranks on one GPU must be refused in one line, as qlora with fsdp.
  echo "== one run on several processes: DDP on two ranks sharing the GPU, FSDP on one rank"
  DIST=("${MINILM[@]}" trainer.device=cuda trainer.max_steps=30 trainer.epochs=1 data.max_train_samples=1024
        data.max_eval_samples=256 monitor.warmup_steps=3 "tracker.uri=$STORE" tracker.log_model=false
        tracker.experiment=cuda-dist)
  bench run -m "${DIST[@]}" method=full,lora,qlora trainer.strategy=ddp trainer.nproc=2 "hydra.sweep.dir=$WORK/ddp"
  bench run -m "${DIST[@]}" method=full,lora trainer.strategy=fsdp trainer.nproc=1 "hydra.sweep.dir=$WORK/fsdp"
  for refused in "method=full trainer.nproc=2" "method=qlora trainer.nproc=1"; do
    # shellcheck disable=SC2086  # the words of $refused are overrides
    timeout 120 "$PY" -m bench.cli run "${DIST[@]}" $refused trainer.strategy=fsdp "hydra.run.dir=$WORK/refused" \
      2>&1 | grep '^error:' || { echo "FAILED: fsdp with $refused was not refused in one line"; status=1; }
  done
fi

if wanted smollm2; then
  echo "== SmolLM2-135M-shaped causal LM: full, LoRA, QLoRA"
  bench run -m "${SMOLLM2[@]}" method=full,lora,qlora trainer.device=cuda trainer.batch_size=8 \
    trainer.max_steps=60 "tracker.uri=$STORE" tracker.log_model=false tracker.experiment=cuda-smollm2 \
    "hydra.sweep.dir=$WORK/smollm2"
fi
if wanted levers; then
  echo "== the memory levers on the SmolLM2-shaped model"
  bench run -m "${SMOLLM2[@]}" method=lora,qlora trainer.gradient_checkpointing=true trainer.device=cuda \
    trainer.batch_size=8 trainer.max_steps=30 "tracker.uri=$STORE" tracker.log_model=false \
    tracker.experiment=cuda-levers "hydra.sweep.dir=$WORK/checkpointing"
  bench run -m "${SMOLLM2[@]}" method=full trainer.optimizer=adamw_8bit,paged_adamw_8bit,paged_adamw_32bit \
    trainer.device=cuda trainer.batch_size=8 trainer.max_steps=30 "tracker.uri=$STORE" tracker.log_model=false \
    tracker.experiment=cuda-levers "hydra.sweep.dir=$WORK/optimizers"
fi

if wanted profile; then
  echo "== where the step time goes on CUDA (monitor.profile): LoRA, QLoRA, DoRA on the MiniLM shape"
  bench run -m "${MINILM[@]}" method=lora,qlora,dora trainer.device=cuda trainer.max_steps=24 trainer.epochs=1 \
    data.max_train_samples=1024 data.max_eval_samples=256 monitor.profile=true monitor.warmup_steps=10 \
    "tracker.uri=$STORE" tracker.log_model=false tracker.experiment=cuda-profile "hydra.sweep.dir=$WORK/profile"
fi

if wanted 1b; then
  echo "== Llama-3.2-1B-shaped causal LM (MiniLM's vocabulary): LoRA and QLoRA at 4 x 512 tokens"
  bench run -m model=tiny-llama model.architecture.hidden_size=2048 model.architecture.num_hidden_layers=16 \
    model.architecture.num_attention_heads=32 model.architecture.num_key_value_heads=8 \
    model.architecture.intermediate_size=8192 model.architecture.max_position_embeddings=2048 \
    data.max_length=512 data.max_train_samples=256 data.max_eval_samples=32 data.general_eval_chunks=2 \
    trainer.eval_batch_size=8 method=lora,qlora trainer.device=cuda trainer.batch_size=4 trainer.max_steps=20 \
    "tracker.uri=$STORE" tracker.log_model=false tracker.experiment=cuda-1b "hydra.sweep.dir=$WORK/1b"
fi

echo "== per run: the plan against what was measured (MiB)"
"$PY" - "$STORE" <<'EOF' || status=1
import sys

import mlflow

from bench.distributed.figures import per_rank

mlflow.set_tracking_uri(sys.argv[1])
MIB = 2 ** 20
experiments = [e.name for e in mlflow.search_experiments() if e.name.startswith("cuda-")]
runs = mlflow.search_runs(experiment_names=experiments, output_format="list") if experiments else []
# each run against its own plan at the batch it met: tensors (the plan's own accounting), the allocator (the check),
# reserved and the process (NVML), the last three with the terms calibrated from the runs stored before it
columns = ["plan T", "tensor", "T err%", "plan A", "alloc", "A err%", "plan R", "reserved", "plan P", "nvml",
           "P err%", "tok/s", "J", "acc/loss"]
print(f"{'experiment':14s} {'technique':9s} {'levers':28s} {'status':9s}" + "".join(f"{c:>10s}" for c in columns))
for run in sorted(runs, key=lambda r: (r.info.experiment_id, r.data.tags.get("technique", ""), r.info.start_time)):
    tags, m, p = run.data.tags, run.data.metrics, run.data.params
    if tags.get("sweep_role") == "parent":
        continue
    levers = f"gc={p.get('trainer.gradient_checkpointing', '?')} opt={p.get('trainer.optimizer', '?')}"
    def get(name, m=m):
        return m.get(name, float("nan"))
    values = [get("plan/met_peak_bytes") / MIB, get("mem/tensor_peak_bytes") / MIB,
              get("mem/tensor_prediction_error_pct"), get("plan/met_allocator_peak_bytes") / MIB,
              get("mem/allocator_peak_bytes") / MIB, get("mem/prediction_error_pct"),
              get("plan/met_reserved_bytes") / MIB, get("mem/peak_reserved_bytes") / MIB,
              get("plan/met_process_bytes") / MIB, get("mem/peak_nvml_process_bytes") / MIB,
              get("mem/process_prediction_error_pct"), get("train/tokens_per_s"), get("gpu/energy_j"),
              m.get("eval/accuracy", get("eval/loss"))]
    name = mlflow.get_experiment(run.info.experiment_id).name
    print(f"{name:14s} {tags.get('technique', '?'):9s} {levers:28s} {run.info.status:9s}"
          + "".join(f"{v:10.2f}" for v in values))
    for key in ("plan/error", "error", "failure", "plan/notes", "plan/calibration", "mem/peak_module",
                "monitor/backend", "monitor/reason", "gpu/energy_source", "gpu/energy_coverage"):
        if key in tags:
            print(f"    {key}: {tags[key][:300]}")
dist = [run for run in runs if run.data.tags.get("dist/strategy")]
if dist:
    print("\nper rank (MiB, tokens/s, s):")
for run in dist:
    m, tags = run.data.metrics, run.data.tags
    print(f"  {tags.get('technique', '?')} {tags['dist/strategy']} on {tags.get('dist/backend')}: {run.info.status}, "
          f"{m.get('train/tokens_per_s', float('nan')):.0f} tokens/s in total, tensor peak (max) "
          f"{m.get('mem/tensor_peak_bytes', float('nan')) / MIB:.1f}, plan {m.get('plan/peak_bytes', float('nan')) / MIB:.1f}")
    for rank, own in enumerate(per_rank(m)):
        print(f"    rank {rank}: tokens/s {own.get('tokens_per_s', float('nan')):.0f}, tensor peak "
              f"{own.get('tensor_peak_bytes', float('nan')) / MIB:.1f}, params {own.get('params_bytes', 0) / MIB:.1f}, "
              f"grads {own.get('grads_bytes', 0) / MIB:.1f}, optimizer {own.get('optimizer_bytes', 0) / MIB:.1f}, "
              f"all-reduce {own.get('allreduce_s', float('nan')):.3f}")
if runs:
    print("\nevery metric of the first run:")
    first = runs[0]
    for key in sorted(first.data.metrics):
        print(f"  {key:40s} {first.data.metrics[key]:.6g}")
EOF

echo "== per profiled run: ms per step by category (kernel time), and the files it kept"
"$PY" - "$STORE" "$WORK" <<'EOF' || status=1
import pathlib
import sys

import mlflow

mlflow.set_tracking_uri(sys.argv[1])
names = ("base_matmul", "dequant", "adapter", "attention", "optimizer", "data_host", "other")
profiled = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if "prof/step_ms" in r.data.metrics]
print(f"{'technique':10s} {'step':>8s}" + "".join(f"{n:>12s}" for n in names))
for run in profiled:
    m = run.data.metrics
    print(f"{run.data.tags.get('technique', '?'):10s} {m['prof/step_ms']:8.2f}"
          + "".join(f"{m.get(f'prof/{n}_ms', float('nan')):12.2f}" for n in names)
          + f"  {run.data.tags.get('prof/window', '')} {run.data.tags.get('prof/note', '')}")
for snapshot in sorted(pathlib.Path(sys.argv[2]).rglob("memory_snapshot.pickle")):
    print(f"  {snapshot} ({snapshot.stat().st_size / 2**20:.1f} MiB)")
EOF

if wanted tests; then
  echo "== tests marked gpu"
  cd "$REPO" && step "$PY" -m pytest tests -m gpu -q -p no:cacheprovider --basetemp="$WORK/pytest"; cd "$WORK"
fi

tar -czf "$OUT/store.tar.gz" -C "$WORK" mlflow.db mlruns 2>/dev/null || tar -czf "$OUT/store.tar.gz" -C "$WORK" mlflow.db
echo "== done in ${SECONDS}s, status $status; the store is $OUT/store.tar.gz"
exit $status

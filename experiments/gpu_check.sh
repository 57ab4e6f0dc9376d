#!/usr/bin/env bash
# The GPU paths for real, in one short script (run it on a GPU machine; its output is committed as
# experiments/results/gpu_check.txt with the card named):
#   1. MiniLM trained for one epoch on 2,000 GoEmotions rows in bf16 on the GPU;
#   2. the GoEmotions test set annotated with precision=fp32 on the GPU and precision=fast (CPU engines), with the
#      share of identical `emotions`;
#   3. a 2-job parallel local sweep (cluster=joblib trainer=gpu): each job's GPU printed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
PY=${PY:-python}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=index,name,memory.total --format=csv
start=$(date +%s)
$PY -m eqn.run model=minilm trainer=gpu pipeline=coeqn data.max_train_samples=2000 trainer.max_epochs=1 \
    logger=none pipeline.analyze=false "hydra.run.dir=$OUT/train"
echo "train: $(( $(date +%s) - start )) s"
$PY -c "from eqn.data import sources; import pandas as pd; \
pd.DataFrame({'text': sources.load('goemotions', '/nonexistent').splits['test'].texts}).to_csv('$OUT/test.csv', index=False)"
for mode in "device=cuda precision=fp32" "device=cuda precision=bf16" "precision=fast"; do
  name=$(echo "$mode" | tr ' =' '__')
  $PY -m eqn.annotate ckpt="$OUT/train/checkpoints/coeqn.ckpt" input="$OUT/test.csv" output="$OUT/$name.csv" \
      overwrite=true progress=false $mode
done
$PY - "$OUT" <<'PY'
import sys, pandas as pd
out = sys.argv[1]
base = pd.read_csv(f"{out}/device_cuda_precision_fp32.csv", keep_default_na=False)["emotions"]
for name in ("device_cuda_precision_bf16", "precision_fast"):
    other = pd.read_csv(f"{out}/{name}.csv", keep_default_na=False)["emotions"]
    print(f"{name}: {100 * (other == base).mean():.2f}% of rows' emotions identical to GPU fp32")
PY
$PY -m eqn.run -m cluster=joblib trainer=gpu model=minilm pipeline=baseline data.max_train_samples=500 \
    trainer.max_epochs=1 logger=none seed=0,1 "hydra.sweep.dir=$OUT/sweep" 2>&1 | grep -E "GPU\(s\)|test: f1_macro|Launching"
echo "total: $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# One prepared GPU check, sized for a short lease of one GPU machine (the device tool): the CUDA tests, then
# a plan of runs side by side on the one GPU, each with a training time budget, then the test split.
# Everything lands in OUT as two files: gpu.log (GPU facts, test output, utilisation samples, each run's log)
# and results.tar.gz (each run's JSON, as benchmarks.run and benchmarks.sessions write them).
#
#   SEQREC_DATASETS=<folder holding copies of the shared datasets> benchmarks/gpu.sh OUT BUDGET_S [PLAN] [DEVICE]
#
# PLAN "survey" (run 2026-11-28 with BUDGET_S 360): six BERT4Rec settings on Amazon Beauty and GRU4Rec on
# Diginetica. PLAN "beauty-long" (default; run 2026-11-28 with BUDGET_S 465, GRACE_S 75): RecTools' Beauty
# configuration of BERT4Rec trained to early stopping as far as the budget allows (the survey's runs were all
# still improving), beside three refits of it on train + validation (60 epochs, seeds 0 and 1; 90 epochs,
# seed 0), whose epoch counts the selection run's best epoch then judges.
# On a machine without ../shared: copy the datasets a plan reads (amazon-beauty-bert4rec, movielens-100k,
# diginetica-sessions-dynamicrec) into a git-ignored folder of the checkout, e.g. .gpu-data/ listed in
# .git/info/exclude, carry it, and set SEQREC_DATASETS=$PWD/.gpu-data (their licences forbid committing them).
# GRACE_S (default 150) bounds what may follow the budget (the last epoch, the test split): past
# BUDGET_S + GRACE_S the runs still going are stopped, so the script ends in time to hand its files back.
set -u
out=${1:?usage: gpu.sh OUT BUDGET_S [PLAN] [DEVICE]}; budget=${2:?BUDGET_S}; plan=${3:-beauty-long}
device=${4:-cuda}
py=${PYTHON:-python3}
grace=${GRACE_S:-150}
work=$(mktemp -d)
log=$out/gpu.log
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$(dirname "$0")/.."

{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc --all
} >>"$log" 2>&1

start=$SECONDS
common=(--valid-users 10000 --bucketing --epochs 1000 --patience 20 --time-budget "$budget" --device "$device"
        --quiet --out-dir "$work")
bench() {  # bench TAG CONFIG [options]: one leave-one-out run in the background
  local tag=$1; shift
  $py -m benchmarks.run "$@" "${common[@]}" --tag="$tag" >"$work/$tag.log" 2>&1 &
}
case $plan in
survey)
  # BERT4Rec on Amazon Beauty (attention dropout = dropout, as the reference; 10,000 validation users)
  bench -gpu-paper beauty-bert4rec                                  # the paper's setting (rho 0.6, post-LN)
  bench -gpu-paper-rtlayer beauty-bert4rec --set norm=rectools      # + RecTools' layer (best on ML-100K)
  bench -gpu-paper-256 beauty-bert4rec --set dim=256 --n-heads 4    # the paper's setting, RecTools' size
  bench -gpu-rectools-noidrop beauty-bert4rec-rectools --set item_dropout=0
  bench -gpu-rectools-256 beauty-bert4rec-rectools --set dim=256 --n-heads 4   # RecTools' Beauty configuration
  bench -gpu-rectools-256-noidrop beauty-bert4rec-rectools --set dim=256 --n-heads 4 --set item_dropout=0
  # GRU4Rec, official defaults, Diginetica session protocol: events/s on the GPU
  $py -m benchmarks.sessions diginetica-gru4rec --device "$device" --time-budget "$budget" --quiet \
      --out-dir "$work" --tag=-gpu >"$work/-gpu-gru4rec.log" 2>&1 &
  ;;
beauty-long)
  # selection (validation, early stopping) and refits on train + validation (--refit-epochs: a fixed count; the
  # budget still caps it, and run.py's --refit would train its refit without one) of RecTools' configuration
  bench -gpu-rectools-256-long beauty-bert4rec-rectools --set dim=256 --n-heads 4
  bench -gpu-rectools-256-refit60 beauty-bert4rec-rectools --set dim=256 --n-heads 4 --refit-epochs 60
  bench -gpu-rectools-256-refit60-seed1 beauty-bert4rec-rectools --set dim=256 --n-heads 4 --refit-epochs 60 --seed 1
  bench -gpu-rectools-256-refit90 beauty-bert4rec-rectools --set dim=256 --n-heads 4 --refit-epochs 90
  ;;
*)
  echo "unknown plan '$plan'; choose from survey, beauty-long" >&2; exit 2
  ;;
esac

# tests that need CUDA (skipped elsewhere), beside the runs
echo "== pytest -k cuda" >>"$log"
$py -m pytest tests -q -k cuda -p no:cacheprovider >>"$log" 2>&1
echo "pytest exit $?" >>"$log"

while [ -n "$(jobs -rp)" ] && [ $((SECONDS - start)) -lt $((budget + grace)) ]; do
  if command -v nvidia-smi >/dev/null; then
    echo "$((SECONDS - start)) s: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)" >>"$log"
  fi
  sleep 15
done
if [ -n "$(jobs -rp)" ]; then
  echo "stopping runs still going after $((SECONDS - start)) s" >>"$log"
  kill $(jobs -rp) 2>/dev/null
fi
wait
for f in "$work"/*.log; do
  echo "== $(basename "$f")" >>"$log"
  grep -v "^\s*$" "$f" >>"$log"
done
tar czf "$out/results.tar.gz" -C "$work" $(cd "$work" && ls *.json 2>/dev/null)
rm -rf "$work"
echo "done after $SECONDS s" >>"$log"

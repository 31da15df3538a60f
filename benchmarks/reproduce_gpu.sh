#!/usr/bin/env bash
# The GPU share of the two reproduction tables, sized for one short lease of a GPU machine (the device tool):
# a CUDA smoke run of every baseline (--quick), then the transformer and GRU columns under per-model time
# budgets; brings back the logs and each table's results.json. The CPU columns run on the 2-core machine (docs/reproduce.md); the results merge by label.
#
#   SEQREC_DATASETS=.gpu-data benchmarks/reproduce_gpu.sh OUT
#
# .gpu-data holds copies of amazon-beauty-bert4rec and amazon-video-games-sasrec (git-ignored through
# .git/info/exclude; their licences forbid committing them), carried to the machine.
set -u
out=${1:?usage: reproduce_gpu.sh OUT}
data=${SEQREC_DATASETS:-../shared/datasets}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
seqrec() { python3 -m seqrec.cli "$@"; }
games=$data/amazon-video-games-sasrec/interactions.csv.gz
beauty=$data/amazon-beauty-bert4rec/interactions.csv.gz
mkdir -p "$out"
{ date -u; nvidia-smi --query-gpu=name,memory.total --format=csv; nproc; } >"$out/gpu.log" 2>&1
start=$SECONDS
seqrec reproduce sasrec-table --quick --device cuda --data "$games" --out /tmp/reproduce-quick >>"$out/gpu.log" 2>&1
echo "quick smoke: exit $? after $((SECONDS - start)) s" >>"$out/gpu.log"
seqrec reproduce bert4rec-table --device cuda --data "$beauty" --out /tmp/reproduce/bert4rec-table \
    --models BERT4Rec,SASRec,GRU4Rec,GRU4Rec+ --time-budget "BERT4Rec=260,SASRec=70,35" >"$out/bert4rec.log" 2>&1
echo "bert4rec-table: exit $? after $((SECONDS - start)) s" >>"$out/gpu.log"
seqrec reproduce sasrec-table --device cuda --data "$games" --out /tmp/reproduce/sasrec-table --models SASRec \
    --time-budget 70 >"$out/sasrec.log" 2>&1
echo "sasrec-table: exit $? after $((SECONDS - start)) s" >>"$out/gpu.log"
cp /tmp/reproduce/bert4rec-table/results.json "$out/bert4rec-table.json"
cp /tmp/reproduce/sasrec-table/results.json "$out/sasrec-table.json"

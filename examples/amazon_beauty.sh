#!/usr/bin/env bash
# H2Rec on the real Amazon Beauty data in ../shared/data (or DATA=/path/to/data), with the CLIs.
# About 1 minute for semantic IDs and 10-30 minutes per model on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/beauty}

# item text file whose ids match the interaction file (sequence ids "1".."12101" -> product titles)
python -c "import sys; sys.path.insert(0, 'benchmarks'); from datasets import items_file; from pathlib import Path; print(items_file('beauty', Path('$DATA')))"
semid encode benchmarks/work/beauty/items.jsonl -o "$OUT/semid" --template "{title}" --cache-dir benchmarks/work/cache

for model in hid h2rec; do
  h2rec train --interactions "$DATA/amazon-beauty/sequential_data.txt" --semid "$OUT/semid" \
    --model "$model" --backbone sasrec --eval-negatives 100 -o "$OUT/$model"
done
h2rec compare "$OUT/hid" "$OUT/h2rec"

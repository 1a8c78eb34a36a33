#!/usr/bin/env bash
# H2Rec on the real Amazon Beauty data (P5/S3Rec split) in ../shared/data (or DATA=/path/to/data), with
# the CLIs only. About 1 minute to prepare and encode, then 20-60 minutes per model on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/beauty}

# the downloaded files -> items.jsonl + interactions.csv with the same item ids (ASINs), and a report
h2rec prepare p5 "$DATA/amazon-beauty" -o "$OUT/data"
semid encode "$OUT/data/items.jsonl" -o "$OUT/semid" --template "{title}"

for model in hid h2rec; do
  h2rec train --interactions "$OUT/data/interactions.csv" --semid "$OUT/semid" --model "$model" \
    --exclude-history -o "$OUT/$model"
done
h2rec compare "$OUT/hid" "$OUT/h2rec" --protocol full_unseen
h2rec recommend "$OUT/h2rec" --user "$(sed -n 2p "$OUT/data/interactions.csv" | cut -d, -f1)" -k 10

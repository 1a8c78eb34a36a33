"""The H2Rec study on real data: the paper's tables, rerun with this toolkit (issue 5).

One command per table, run from the repository root. Every run is trained in its own folder under
benchmarks/work/runs/ (gitignored: checkpoints, logs); once it finishes, its results are copied into
a small record under benchmarks/results/study/records/ (committed), which is all the report reads. A
run with a record is skipped (delete the record to train it again), an interrupted one resumes from
its last checkpoint, so the study can be completed in pieces across sittings and checkouts. A run
being trained holds a lock file, so several workers can share one command's list (e.g. two
single-thread workers on a 2-core machine: `OMP_NUM_THREADS=1 python -m benchmarks.study table3 &`
twice).

    python -m benchmarks.study prepare  --datasets beauty yelp    # semantic IDs for each dataset
    python -m benchmarks.study table2   --datasets yelp beauty scientific --seeds 42 43 44
    python -m benchmarks.study table3   --seeds 42 43 44          # ablations (Yelp, Scientific)
    python -m benchmarks.study sweeps   --seeds 42                # beta, gamma, p, o (Yelp)
    python -m benchmarks.study table6   --seeds 42                # VQ / PQ / RQ-VAE semantic IDs (Yelp)
    python -m benchmarks.study table7   --seeds 42                # GRU4Rec and BERT4Rec backbones (Yelp)
    python -m benchmarks.study table8   --seeds 42                # codebook shapes (Yelp)
    python -m benchmarks.study loss     --datasets beauty --seeds 42 43 44   # full cross-entropy instead of BPR
    python -m benchmarks.study patience --datasets scientific              # early stopping after 30 epochs, not 10
    python -m benchmarks.study table2-defaults --datasets scientific      # Table 2 + rivals under h2rec's defaults
    python -m benchmarks.study table3-defaults --datasets scientific      # Table 3 under h2rec's defaults
    python -m benchmarks.study llmesr-defaults --datasets scientific      # LLM-ESR's parts under h2rec's defaults
    python -m benchmarks.study quantizer-defaults --datasets beauty --seeds 44   # RQ-VAE against RQ-KMeans codes
    python -m benchmarks.study report                             # docs/results.md + plots from what has run

The package: ``experiments`` (the settings and one function per table), ``runner`` (locks, child
processes, records), ``report`` (reads the records, writes docs/results.md), ``paper.json`` (the
paper's figures). Options shared by every run sit in ``experiments.BASE`` (``DEFAULTS`` for the
*-defaults tables); each table adds its own overrides. Model selection uses validation NDCG@10 under
full ranking; test numbers are reported under full ranking and the paper's 1 + 100 sampled protocol.
"""

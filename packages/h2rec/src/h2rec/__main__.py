"""`python -m h2rec ...`, and so `torchrun --nproc_per_node N -m h2rec train ...`: the h2rec CLI."""

from h2rec.cli import main

if __name__ == "__main__":
    main(prog_name="h2rec")

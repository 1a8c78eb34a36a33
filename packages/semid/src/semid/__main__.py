"""`python -m semid ...`, and so `torchrun --nproc_per_node N -m semid embed ITEMS -o OUT`: the semid CLI."""

from semid.cli import main

if __name__ == "__main__":
    main(prog_name="semid")

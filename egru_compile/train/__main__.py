"""`python -m egru_compile.train ...` (also under `torchrun --nproc_per_node N -m egru_compile.train ...`)."""
from .cli import train

if __name__ == "__main__":
    train(prog_name="python -m egru_compile.train")

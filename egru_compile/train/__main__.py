"""`python -m egru_compile.train ...` (also under `torchrun --nproc_per_node N -m egru_compile.train ...`): the same
command as `egru-compile train`, with its errors as one ``error:`` line (exit 2 for a usage error) and Ctrl-C,
SIGTERM, SIGHUP ending it as ``error: interrupted`` after cleanup, as `egru-compile` does."""
from ..guard import run_click_main
from .cli import train


def main(args=None) -> None:
    run_click_main(lambda: train.main(args, prog_name="python -m egru_compile.train", standalone_mode=False),
                   "python -m egru_compile.train")


if __name__ == "__main__":
    main()

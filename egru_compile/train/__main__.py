"""`python -m egru_compile.train ...` (also under `torchrun --nproc_per_node N -m egru_compile.train ...`): the same
command as `egru-compile train`, with its errors as one ``error:`` line (exit 2 for a usage error) and Ctrl-C,
SIGTERM, SIGHUP ending it as ``error: interrupted`` after cleanup, as `egru-compile` does."""
import sys

import click

from ..guard import _fail, _Interrupts
from .cli import train


def main(args=None) -> None:
    saved = _Interrupts.saved()
    _Interrupts.install()
    try:
        rv = train.main(args, prog_name="python -m egru_compile.train", standalone_mode=False)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "python -m egru_compile.train"
        _fail(f"{' '.join(e.format_message().split())} (see {cmd} --help)", 2)
    except click.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code or 1)
    except (click.Abort, KeyboardInterrupt):
        _Interrupts.fail()
    except Exception:
        if _Interrupts.count:
            _Interrupts.fail()
        raise
    finally:
        _Interrupts.restore(saved)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()

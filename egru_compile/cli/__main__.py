"""``python -m egru_compile.cli``: the ``egru-compile`` command."""
from . import main

if __name__ == "__main__":
    main()

"""``python -m ebmppl``: the command line (see :mod:`ebmppl.cli`)."""

from ebmppl.cli import main_exit

if __name__ == "__main__":
    main_exit()

"""``python -m ebmppl``: the command line (see :mod:`ebmppl.app.cli`)."""

from ebmppl.app.cli import main_exit

if __name__ == "__main__":
    main_exit()

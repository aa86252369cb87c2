"""`python cli.py ...` runs the same app as the `netspec` command."""
from netspec.cli import main

if __name__ == "__main__":
    main()

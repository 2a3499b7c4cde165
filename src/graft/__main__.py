"""`python -m graft ...` runs the `graft` command, as the installed script does."""

from .cli.main import main

if __name__ == "__main__":
    main()

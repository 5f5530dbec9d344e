"""``python -m alternators_ppl`` runs the command-line interface."""

from alternators_ppl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

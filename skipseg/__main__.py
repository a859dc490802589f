"""`python -m skipseg ...` (also what `torchrun -m skipseg train ...` runs)."""
from skipseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

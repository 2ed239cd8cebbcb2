"""`python -m cassle` is the `cassle` command."""

from cassle.cli import main

raise SystemExit(main())

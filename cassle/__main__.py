"""`python -m cassle` is the `cassle` command."""

from cassle.apps.cli import main

raise SystemExit(main())

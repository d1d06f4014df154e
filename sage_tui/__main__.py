"""`python -m sage_tui` runs the same entry point as the `sage-tui` script."""

from sage_tui.cli import main

raise SystemExit(main())

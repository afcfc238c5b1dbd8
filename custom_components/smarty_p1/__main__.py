"""``python -m custom_components.smarty_p1``: the console reader and meter simulator."""

from .p1.cli import main

raise SystemExit(main())

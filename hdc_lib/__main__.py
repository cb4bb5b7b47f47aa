"""`python -m hdc_lib ...` is the same as the `hdc` console script."""
from hdc_lib.cli import main

raise SystemExit(main())

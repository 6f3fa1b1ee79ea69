"""`python -m accelflow ...` is the `accelflow` command."""

import sys

from accelflow.flows.cli.main import main

sys.exit(main())

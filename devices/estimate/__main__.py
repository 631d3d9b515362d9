"""`python -m edgekit.devices.estimate --calibrate [--write] [--recount DIR]`."""

import sys

from edgekit.devices.estimate.calibration import main

sys.exit(main())

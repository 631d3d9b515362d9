"""`python -m edgekit.runtime {predict,golden,bench}`: see runtime/cli.py."""

import sys

from edgekit.runtime.cli import main

sys.exit(main())

"""`python -m runtime {predict,golden,bench}`: see runtime/cli.py."""

import sys

from runtime.cli import main

sys.exit(main())

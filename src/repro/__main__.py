"""Run as: python -m repro run --profile cpu [--only 01 02] [--force]"""

import sys

from repro.runner import main

sys.exit(main())

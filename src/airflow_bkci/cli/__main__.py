"""``python -m airflow_bkci.cli``: the ``airflow-bkci`` command without its script."""

import sys

from airflow_bkci.cli import main

sys.exit(main())

"""``python -m memgpt_jax.cli ...``: the same as the ``memgpt-jax`` console script."""

import sys

from memgpt_jax.cli import main

sys.exit(main())

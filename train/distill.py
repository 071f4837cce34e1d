"""memgpt-jax distill: a thin entry point; the same as `memgpt-jax distill`.

    python train/distill.py --config configs/CONFIG.py --workdir runs/NAME [--config.section.field=value ...]
"""

import sys

from memgpt_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))

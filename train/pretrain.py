"""memgpt-jax pretrain: a thin entry point; the same as `memgpt-jax pretrain`.

    python train/pretrain.py --config configs/CONFIG.py --workdir runs/NAME [--config.section.field=value ...]
"""

import sys

from memgpt_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))

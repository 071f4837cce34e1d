"""The aeslc recipe's table (`train/aeslc_recipe.sh`): see `benchmarks/task_recipes.py`.

    python -m benchmarks.aeslc_recipe --runs runs/aeslc
"""

from benchmarks.task_recipes import main, section_for

section = section_for("aeslc")

if __name__ == "__main__":
    raise SystemExit(main("aeslc"))

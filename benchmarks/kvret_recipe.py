"""The kvret recipe's table (`train/kvret_recipe.sh`): see `benchmarks/task_recipes.py`.

    python -m benchmarks.kvret_recipe --runs runs/kvret
"""

from benchmarks.task_recipes import main, section_for

section = section_for("kvret")

if __name__ == "__main__":
    raise SystemExit(main("kvret"))

"""The squad recipe's table (`train/squad_recipe.sh`): see `benchmarks/task_recipes.py`.

    python -m benchmarks.squad_recipe --runs runs/squad
"""

from benchmarks.task_recipes import main, section_for

section = section_for("squad")

if __name__ == "__main__":
    raise SystemExit(main("squad"))

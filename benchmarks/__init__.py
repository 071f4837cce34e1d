"""memgpt-jax benchmarks: speed, memory and quality, written as JSON + Markdown under results/."""

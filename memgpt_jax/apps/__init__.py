"""What users do with a trained model: generation, classification, evaluation,
extractive QA, chat, and attention maps / saliency. Each takes an opened
:class:`~memgpt_jax.training.run.Run`; the commands are in ``memgpt_jax.cli.apps``."""

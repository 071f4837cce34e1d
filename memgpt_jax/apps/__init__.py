"""What users do with a trained model: generation, classification, evaluation,
extractive QA, chat, and attention maps / saliency (see ``memgpt_jax.apps.cli``)."""

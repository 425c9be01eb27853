"""The reward model: Bradley–Terry losses, the scoring model, training and evaluation.

``load_reward_model(path).score(prompts, responses)`` is what PPO, evaluation and the simulated
annotators call."""

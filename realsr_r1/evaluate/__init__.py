"""Evaluation of a policy on held-out samples: rollouts, the four rewards, image fidelity."""

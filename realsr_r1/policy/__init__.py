"""The VLCoT policy: sequence layout, the policy interface, the tiny backbone, the rollout engine."""

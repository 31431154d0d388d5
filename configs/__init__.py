"""YAML run configs and DeepSpeed presets shipped with the package."""

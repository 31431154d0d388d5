"""Subcommands of ``unified-ar`` that drive the unified model (sample, chat, model-info)."""

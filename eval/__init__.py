"""Benchmarks, official-equivalent metrics, VQA runner, text-to-image evaluation."""

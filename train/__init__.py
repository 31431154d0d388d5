"""Data, the DeepSpeed engine, training stages. Only train/engine.py imports deepspeed."""

"""One distribution, one namespace: ``unified_ar`` plus the top-level folders
``tokenizer/``, ``train/``, ``eval/`` and ``configs/`` mapped to
``unified_ar.tokenizer``, ``unified_ar.train``, ``unified_ar.eval`` and
``unified_ar.configs`` so that no generic top-level module names (``train``,
``eval``) land in site-packages."""
from setuptools import setup

FOLDERS = {
    "unified_ar": "unified_ar",
    "unified_ar.commands": "unified_ar/commands",
    "unified_ar.tokenizer": "tokenizer",
    "unified_ar.train": "train",
    "unified_ar.train.shapes": "train/shapes",
    "unified_ar.train.data": "train/data",
    "unified_ar.eval": "eval",
    "unified_ar.eval.benchmarks": "eval/benchmarks",
    "unified_ar.configs": "configs",
}

setup(
    name="unified-ar",
    version="0.1.0",
    description="Unified autoregressive multimodal model on the TokLIP visual tokenizer",
    python_requires=">=3.10",
    packages=list(FOLDERS),
    package_dir=FOLDERS,
    package_data={"unified_ar.configs": ["*/*.yaml", "*/*.json"]},
    install_requires=[
        "torch>=2.4",  # fused AdamW on CPU
        "transformers>=5.0,<6",
        "deepspeed>=0.16",
        "sentencepiece>=0.2",
        "datasets>=3.0",
        "wandb>=0.18",
        "safetensors>=0.4",
        "pillow>=10",
        "pyyaml>=6",
        "numpy>=1.26",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "gpu": ["flash-attn>=2.6", "xformers>=0.0.28"],
        "serve": ["gradio>=6.31", "gradio_client>=2.7", "selenium>=4.51"],  # selenium: serve --screenshot
        "lora": ["peft>=0.21"],  # train.lora (train/lora.py) and loading save: adapter folders
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "gradio>=6.31", "gradio_client>=2.7", "selenium>=4.51",
                "peft>=0.21"],
    },
    entry_points={"console_scripts": ["unified-ar=unified_ar.cli:main"]},
)

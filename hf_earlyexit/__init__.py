"""hf_earlyexit: intermediate-layer distillation and batched early exit for multilingual encoders."""

__version__ = "0.1.0"

__all__ = ["__version__"]

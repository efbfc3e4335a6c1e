"""vago_lightning: PyTorch Lightning fine-tuning of the Coqui XTTS v2 GPT."""

__version__ = "0.1.0"

"""vago_lightning: PyTorch Lightning fine-tuning of the Coqui XTTS v2 GPT."""

# The one place the version is stated (setup.cfg reads it here); CHANGELOG.md says what changed.
__version__ = "0.5.0"

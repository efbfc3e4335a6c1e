"""Train: `python train.py fit --config finetune.yaml`, the same as `python -m vago_lightning fit ...`
(see README for every key and override)."""

from vago_lightning.training.cli import cli_main

if __name__ == "__main__":
    cli_main()

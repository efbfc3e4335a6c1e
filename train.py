"""Train: `python train.py fit --config finetune.yaml` (see README for every key and override)."""

from vago_lightning.cli import cli_main

if __name__ == "__main__":
    cli_main()

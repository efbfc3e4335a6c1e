"""`python tests/slow_disk_train.py fit ...`: train.py on a slow disk. Each checkpoint waits a second
before its rename, so a test can kill the process while a save is in flight."""

import time

from vago_lightning.training import checkpoints
from vago_lightning.training.cli import cli_main

_publish = checkpoints.AtomicCheckpointIO._publish


def _slow_publish(tmp, path):
    time.sleep(1.0)
    _publish(tmp, path)


checkpoints.AtomicCheckpointIO._publish = staticmethod(_slow_publish)

if __name__ == "__main__":
    cli_main()

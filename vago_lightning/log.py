"""One way to tell the user something, next to Lightning's own console lines."""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_only

# A child of Lightning's logger, so messages reach the console next to Lightning's own.
log = logging.getLogger("lightning.pytorch.vago")


@rank_zero_only
def say(message: str, warning: bool = True) -> None:
    (log.warning if warning else log.info)(message)


def quiet_known_noise() -> None:
    """Silence what we know to be noise, each at the place it comes from, so that a user reads only
    lines that mean something."""
    # The frozen DVAE and mel extractors stay in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # The planned dataset splits its batches among workers itself, so its length is exact.
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # Lightning 2.6's pytree helper on torch 2.11: a deprecation inside Lightning, not ours to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A run resumes from its own folder on purpose (`--fresh true` moves an old run aside).
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # coqui's tokenizer warns of a long text at every encode, every epoch, without saying which line:
    # prepare names each such line once instead.
    logging.getLogger("TTS.tts.layers.xtts.tokenizer").addFilter(
        lambda record: "exceeds the character limit" not in str(record.msg)
    )
    # An advertisement for a hosted logger, printed on every run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: not str(record.msg).startswith("💡 Tip"))

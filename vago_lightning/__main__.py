"""`python -m vago_lightning <verb>`: every stage from one entry point.

Training (a LightningCLI, the same as `python train.py`):
  fit         train (or resume) a run: `fit --config finetune.yaml [--model.lr 1e-6 ...]`
  validate    validation losses of a checkpoint: `validate --config finetune.yaml --ckpt_path FILE`

Tools (`<verb> --help` shows every flag; `--config FILE.yaml` gives them from a file):
  tiny-base   write a random base model in the XTTS-v2 release layout (to try the pipeline)
  demo-data   synthesize the two Hungarian demo corpora offline
  prepare     corpora to WebDataset shards with a stratified validation split
  export      a training checkpoint to the XTTS-v2 release layout (coqui-tts loads it as is)
  generate    speech from an exported model: one wav per sentence and temperature, and an index
  compare     the same sentences from several models on one self-contained HTML page
  report      did stage two keep the quiz voice and learn the interview? curves, table, verdict
  serve       an OpenAI-compatible speech server and a page for an exported voice (streamed, queued)
  demo        the whole chain on the embedded default, in the current folder (what `make demo` runs)

--version prints the version; CHANGELOG.md says what changed in each.
"""

from __future__ import annotations

import sys

TRAINING_VERBS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"vago_lightning {__version__}")
        return 0
    if argv[0] in TRAINING_VERBS:
        from .training.cli import cli_main

        cli_main(given)  # None: LightningCLI reads sys.argv itself
        return 0
    from jsonargparse import auto_cli

    from .commands import VERBS, normalize
    from .errors import VagoError
    from .parsing import Parser

    verb = argv[0]
    if verb not in VERBS:
        import difflib

        close = difflib.get_close_matches(verb, [*TRAINING_VERBS, *VERBS, "--help", "--version"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(
            f"error: unknown verb {verb!r}{hint} (verbs: {', '.join([*TRAINING_VERBS[:2], *VERBS])})",
            file=sys.stderr,
        )
        return 2
    try:
        auto_cli(
            {verb: VERBS[verb]},
            args=[verb, *normalize(verb, argv[1:])],
            as_positional=False,
            parser_class=Parser,
            prog="python -m vago_lightning",
        )
    except VagoError as err:
        # Expected bad input: one line that names the file or flag and the fix. Anything else is a
        # bug or a machine problem and keeps its traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

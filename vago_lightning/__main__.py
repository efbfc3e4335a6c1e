"""`python -m vago_lightning <verb>`: the tools around training (training itself is `train.py`).

Verbs:
  tiny-base   write a random base model in the XTTS-v2 release layout
  demo-data   synthesize the two Hungarian demo corpora with espeak-ng
  prepare     corpora to WebDataset shards with a stratified validation split
  export      a training checkpoint to the XTTS-v2 release layout (coqui-tts loads it as is)
  generate    speech from an exported model: one wav per sentence and temperature, and an index
  compare     the same sentences from several models on one self-contained HTML page
"""

from __future__ import annotations

import argparse
import os
import sys


def _tiny_base(args: argparse.Namespace) -> None:
    from .base_model import TinyBaseSpec, write_tiny_base

    spec = TinyBaseSpec(gpt_layers=args.gpt_layers, gpt_dim=args.gpt_dim, gpt_heads=args.gpt_heads,
                        dvae=args.dvae, seed=args.seed)
    out = write_tiny_base(args.out, spec, overwrite=args.overwrite)
    print(f"tiny base model written to {out} ({spec.gpt_layers} layers, dim {spec.gpt_dim}, dvae {spec.dvae})")


def _demo_data(args: argparse.Namespace) -> None:
    from .demo_data import describe, write_demo_corpora

    written = write_demo_corpora(args.out, seed=args.seed, workers=args.workers, overwrite=args.overwrite)
    for name, rows in written.items():
        print(f"{args.out}/{name}: {describe(rows)}")


def _prepare(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .prepare import PrepareSettings, prepare

    corpora = {}
    for name, paths in _named_paths(args.corpus, "--corpus").items():
        if len(paths) > 1:
            raise ValueError(f"--corpus {name}: given twice")
        corpora[name] = paths[0]
    settings = PrepareSettings(language=args.language, val_fraction=args.val_fraction, seed=args.seed,
                               min_seconds=args.min_seconds, shard_size=args.shard_size)
    base = Path(args.base_model) if args.base_model else None
    manifest, rebuilt = prepare(corpora, Path(args.out), settings, base, workers=args.workers,
                                progress=not args.quiet)
    for name, was_rebuilt in rebuilt.items():
        print(f"{name}: {'prepared' if was_rebuilt else 'unchanged, nothing to do'}")
    print((Path(args.out) / "summary.md").read_text())


def _named_paths(specs: list[str], flag: str) -> dict:
    from pathlib import Path

    out: dict = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {spec}: expected NAME=DIRECTORY, e.g. {flag} quiz=corpora/demo/quiz")
        out.setdefault(name, []).append(Path(path))
    return out


def _export(args: argparse.Namespace) -> None:
    from .export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, args.base_model, _named_paths(args.speaker, "--speaker"),
                            overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1024**2
    print(f"exported {args.ckpt} to {out} ({', '.join(sorted(p.name for p in out.iterdir()))}; {size:.0f} MB)")


def _settings(args: argparse.Namespace):
    from .synthesis import Settings

    return Settings(language=args.language, seed=args.seed, max_new_tokens=args.max_new_tokens)


def _generate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .synthesis import generate, read_texts

    index = generate(args.model, [Path(r) for r in args.reference], read_texts(args.texts), args.temperature,
                     args.out, _settings(args))
    for s in index["samples"]:
        print(f"{Path(args.out) / s['file']}: {s['duration']:.2f} s, RTF {s['real_time_factor']}")
    print(f"index: {Path(args.out) / 'index.json'}")


def _compare(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .compare import compare
    from .synthesis import read_texts

    models = {name: paths[0] for name, paths in _named_paths(args.model, "--model").items()}
    if len(models) < 2:
        raise ValueError("--model: give two or more, e.g. --model A=exported/milliomos --model B=exported/combined")
    report = compare(models, [Path(r) for r in args.reference], read_texts(args.texts), args.temperature, args.out,
                     _settings(args))
    for name, m in report["models"].items():
        print(f"{name}: speaker similarity {m['speaker_similarity']:.3f}, mean duration {m['duration']:.2f} s, "
              f"RTF {m['real_time_factor']:.2f}")
    print(f"page: {Path(args.out) / 'index.html'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vago_lightning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="verb")

    p = verbs.add_parser("tiny-base", help="write a random base model in the XTTS-v2 release layout")
    p.add_argument("--out", required=True, help="directory to write (must be new or empty)")
    p.add_argument("--gpt-layers", type=int, default=2)
    p.add_argument("--gpt-dim", type=int, default=64, help="a multiple of 32 and of --gpt-heads")
    p.add_argument("--gpt-heads", type=int, default=4)
    p.add_argument("--dvae", choices=["tiny", "xtts"], default="tiny",
                   help="tiny: fast tests; xtts: the release's DVAE architecture (51.5 M params)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing base")
    p.set_defaults(func=_tiny_base)

    p = verbs.add_parser("demo-data", help="synthesize the quiz and interview demo corpora (espeak-ng)")
    p.add_argument("--out", required=True, help="parent directory; writes OUT/quiz and OUT/interview")
    p.add_argument("--seed", type=int, default=0, help="chooses the interview's composed lines")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_demo_data)

    p = verbs.add_parser("prepare", help="corpora to WebDataset shards with a stratified validation split")
    p.add_argument("--corpus", action="append", required=True, metavar="NAME=DIR",
                   help="a corpus: coqui metadata.csv, LJSpeech metadata.csv, or recordings with subtitles")
    p.add_argument("--language", default="hu")
    p.add_argument("--out", default="data_shards")
    p.add_argument("--base-model", help="base model directory: precompute DVAE codes and check token counts")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    p = verbs.add_parser("export", help="a training checkpoint to the XTTS-v2 release layout")
    p.add_argument("--ckpt", required=True, help="a checkpoint of a run, e.g. checkpoints/combined/best.ckpt")
    p.add_argument("--out", required=True, help="directory to write, e.g. exported/combined")
    p.add_argument("--base-model", help="the base the run was trained on (default: the one it recorded)")
    p.add_argument("--speaker", action="append", metavar="NAME=WAV",
                   help="store a named voice from a reference recording in speakers_xtts.pth (repeatable)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_export)

    for verb, helptext, func in (("generate", "speech from an exported model", _generate),
                                 ("compare", "several models side by side on one HTML page", _compare)):
        p = verbs.add_parser(verb, help=helptext)
        if verb == "generate":
            p.add_argument("--model", required=True, help="an exported model directory")
        else:
            p.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="repeat for each model")
        p.add_argument("--reference", action="append", required=True, help="reference recording of the voice (repeatable)")
        p.add_argument("--texts", help="UTF-8 file, one text per line (default: sentences in both registers)")
        p.add_argument("--language", default="hu")
        p.add_argument("--temperature", type=float, nargs="+", default=[0.55, 0.65, 0.75])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--max-new-tokens", type=int, help="cap on generated codes (1 code = 1024 samples)")
        p.add_argument("--out", required=True)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as err:
        # One clear line instead of a traceback: the message names the file or flag and the fix.
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

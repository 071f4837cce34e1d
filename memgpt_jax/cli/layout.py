"""``memgpt-jax layout``: block layouts derived from a teacher's attention.

    memgpt-jax layout derive --teacher runs/demo/teacher --split validation --examples 128 \\
        --density 0.5 --out runs/demo/derived.json
    memgpt-jax layout show runs/demo/derived.json

``derive`` runs the teacher over a sample of a prepared split, adds up per layer and head the
attention mass that falls in each block, and keeps for each head the diagonal plus the block
offsets, global blocks and dense leading rows holding the most mass, within the density (kept
blocks over all blocks of the square score matrix) and, with ``--max-kernel-tiles``, within the
tiles the XLA kernel computes once it pads its row groups. A model uses the file with
``--config.model.attention.pattern=derived --config.model.attention.layout_file=FILE``;
its run then carries the layout (the file is not needed again).
"""

from __future__ import annotations

import argparse
import json
import os

_USE = "--config.model.attention.pattern=derived --config.model.attention.layout_file={}"


def _summary_lines(payload: dict, path: str) -> list[str]:
    from memgpt_jax.attention import derived as derived_lib  # lazy: keeps --help fast

    try:
        mass = derived_lib.read_mass(path)
    except OSError:  # the mass array was not kept beside the file
        mass = None
    return derived_lib.summary_lines(payload, mass)


def _refit(args: argparse.Namespace) -> dict:
    """``--from FILE``: the mass measured for FILE, fitted again (another density, --raw, grouping)."""
    from memgpt_jax.attention import derived as derived_lib
    from memgpt_jax.config import read_layout_file

    if not os.path.isfile(args.from_file):
        raise SystemExit(f"error: --from {args.from_file}: no such file (a layout file written by `memgpt-jax "
                         "layout derive --teacher RUN`, with its .mass.npy beside it)")
    try:
        read_layout_file(args.from_file)
        with open(args.from_file, encoding="utf-8") as f:
            old = json.load(f)
        mass = derived_lib.read_mass(args.from_file)
    except (ValueError, OSError) as err:
        raise SystemExit(f"error: --from {args.from_file}: {err}") from None
    try:
        mass = derived_lib.group_mass(mass, args.layers or mass.shape[0], args.heads or mass.shape[1])
        spec = derived_lib.fit(mass, args.density, block=old["block_size"], raw=args.raw,
                               max_tiles=args.max_kernel_tiles, share_tolerance=args.share_tolerance)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    provenance = {**old.get("provenance", {}), "density": args.density, "refit_from": args.from_file,
                  "max_kernel_tiles": args.max_kernel_tiles, "share_tolerance": args.share_tolerance}
    return derived_lib.write_file(args.out, spec, mass, provenance)


def cmd_derive(args: argparse.Namespace) -> int:
    if not 0.0 < args.density <= 1.0:
        raise SystemExit(f"error: --density must be in (0, 1] (kept blocks / all blocks), got {args.density}")
    if args.examples < 1:
        raise SystemExit(f"error: --examples must be >= 1, got {args.examples}")
    if args.share_tolerance is None:
        from memgpt_jax.attention.derived import SHARE_TOLERANCE

        args.share_tolerance = SHARE_TOLERANCE
    if args.max_kernel_tiles is not None and args.max_kernel_tiles < 1:
        raise SystemExit(f"error: --max-kernel-tiles must be >= 1, got {args.max_kernel_tiles}")
    if args.max_kernel_tiles is not None and args.raw:
        raise SystemExit("error: --max-kernel-tiles fits band layouts; --raw keeps the measured map")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise SystemExit(f"error: --out {args.out}: directory {out_dir} does not exist")
    if (args.teacher is None) == (args.from_file is None):
        raise SystemExit("error: give --teacher RUN (measure its attention) or --from FILE (refit a measured layout "
                         "file), one of them")
    if args.from_file is not None:
        return _wrote(_refit(args), args.out)

    from memgpt_jax.apps import layouts  # lazy: JAX
    from memgpt_jax.training.run import RunError, open_run

    try:
        run = open_run(args.teacher, step=args.step)
    except (FileNotFoundError, RunError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if run.tokenizer is None:
        raise SystemExit(f"error: {args.teacher} carries no tokenizer and its config names none; derive reads a "
                         "prepared split through it")
    split = args.split or run.config.data.eval_split
    try:
        payload = layouts.derive(run, split, args.examples, args.density, args.out, block=args.block,
                                 seq_len=args.seq_len, layers=args.layers, heads=args.heads, raw=args.raw,
                                 max_tiles=args.max_kernel_tiles, share_tolerance=args.share_tolerance,
                                 batch_size=args.batch_size, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    return _wrote(payload, args.out)


def _wrote(payload: dict, out: str) -> int:
    print("\n".join(_summary_lines(payload, out)))
    print(f"wrote {out}; train with it: {_USE.format(out)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from memgpt_jax.config import read_layout_file

    try:
        read_layout_file(args.file)  # checks the format and the layout
        with open(args.file, encoding="utf-8") as f:
            payload = json.load(f)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print("\n".join(_summary_lines(payload, args.file)))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``layout`` (derive / show) to ``subparsers``; return its parser."""
    layout = subparsers.add_parser("layout", help="block layouts derived from a teacher's attention",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = layout.add_subparsers(dest="layout_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "derive", help="measure a teacher's attention mass per block and fit a layout to a density",
        description="Runs the teacher over --examples examples of --split and writes a layout file that keeps, "
                    "per layer and head, the diagonal and the block offsets, global blocks and dense leading rows "
                    "of most attention mass "
                    "within --density. Example: memgpt-jax layout derive --teacher runs/demo/teacher --split "
                    "validation --examples 128 --density 0.5 --out runs/demo/derived.json")
    p.add_argument("--teacher", default=None, help="the teacher's run directory (normally a dense model)")
    p.add_argument("--from", dest="from_file", default=None, metavar="FILE",
                   help="instead of --teacher: fit the attention mass measured for this layout file again (another "
                        "--density, --raw, --layers/--heads), without running the teacher")
    p.add_argument("--step", type=int, default=None, help="the teacher's checkpoint step (default: the newest)")
    p.add_argument("--split", default=None, help="a split of the teacher's prepared dataset (default: its eval split)")
    p.add_argument("--examples", type=int, default=256, help="examples to measure (default: %(default)s)")
    p.add_argument("--density", type=float, required=True,
                   help="kept blocks / all blocks of the square score matrix, per head, at the measured length "
                        "(a causal layout keeps at most about 0.5)")
    p.add_argument("--out", required=True, help="the layout file to write (JSON; the mass array goes beside it)")
    p.add_argument("--block", type=int, default=None, help="block size in tokens (default: the teacher config's)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens measured (default: the teacher's data.seq_len, rounded up to whole blocks)")
    p.add_argument("--layers", type=int, default=None,
                   help="the student's layers, when fewer than the teacher's (consecutive layers are merged)")
    p.add_argument("--heads", type=int, default=None,
                   help="the student's heads per layer, when fewer (consecutive heads merged; 1: one layout per layer)")
    p.add_argument("--raw", action="store_true",
                   help="keep the measured block map itself rather than offsets and globals (valid only up to the "
                        "measured length)")
    p.add_argument("--max-kernel-tiles", type=int, default=None, metavar="N",
                   help="a second budget: each layer may cost the XLA kernel at most N tiles per head, its rows "
                        "split into groups and each group padded to its longest row (a fixed layout's "
                        "BlockLayout.kernel_tiles, to fit a layout that runs no slower than it)")
    p.add_argument("--share-tolerance", type=float, default=None, metavar="T",
                   help="a layer's heads share one layout unless their own keep more than T of the teacher's mass "
                        "beyond it (default 0.005: per-head layouts cost the XLA kernel a gather per head); a "
                        "negative T keeps every head's own layout")
    p.add_argument("--batch-size", type=int, default=None, help="examples per forward (default: what fits ~256 MB)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_derive)

    p = sub.add_parser("show", help="what a layout file keeps, per layer and head",
                       description="Prints a derived layout's provenance, the teacher's attention mass it keeps and "
                                   "its blocks. Example: memgpt-jax layout show runs/demo/derived.json")
    p.add_argument("file", help="a file written by `memgpt-jax layout derive`")
    p.set_defaults(func=cmd_show)
    return layout


__all__ = ["register"]

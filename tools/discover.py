"""``tir discover``: cluster the frames ``tir run --collect`` kept and propose specs for new ones.

    tir discover --from /data/unknown                     # report into /data/unknown/discover/
    tir discover --from /data/unknown --out rep --min-size 8 --known-margin 0.05

Writes ``report.json`` (the tree: every node's size, centre, spread, nearest known class and
its threshold, status new/known, purity where the source labelled frames; the proposals),
``tree.png``, ``exemplars.png`` and one ``proposed-<node>.json`` per new cluster: a spec for
``tir learn --spec`` when the fitted ops reproduce the cluster in the router's space, else
the residual and why no spec was written; leaves whose proposals agree are grouped into one
new degradation with one proposal, ``proposed-group-<k>.json`` (engines/discover.py, engines/propose.py).
"""
from __future__ import annotations

from pathlib import Path

from tir.edge.errors import InputError, ModelError, UsageError

from .cli import folder_problem, number, refusing


def add_arguments(parser) -> None:
    """Add ``tir discover``'s options to ``parser`` (an argparse.ArgumentParser): ``--from`` (the
    ``tir run --collect`` folder), ``--model``, ``--out``, ``--min-size``, ``--max-depth``,
    ``--known-margin``, ``--fit-frames``, ``--no-propose``, ``--seed``.
    """
    parser.add_argument("--from", dest="source", required=True, metavar="DIR",
                        help="a folder filled by tir run --collect DIR")
    parser.add_argument("--model", help="the bundle the frames were collected with (default: the installed one)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default: DIR/discover)")
    parser.add_argument("--min-size", type=int, default=5, help="smallest cluster a split may leave (default 5)")
    parser.add_argument("--max-depth", type=int, default=5, help="deepest split (default 5)")
    parser.add_argument("--known-margin", type=number(float, 0, 2, what="a cosine margin"), default=0.1,
                        help="a cluster whose centre is within this cosine of the nearest class's unknown "
                             "threshold counts as near that known task (default 0.1)")
    parser.add_argument("--fit-frames", type=int, default=16,
                        help="frames nearest each new cluster's centre used to fit the ops (default 16)")
    parser.add_argument("--no-propose", action="store_true", help="cluster and report only")
    parser.add_argument("--seed", type=int, default=0)


def main(args) -> int:
    """Run ``tir discover`` with the parsed ``args``: cluster the collected frames, print each
    leaf, proposal and group, and write ``report.json`` (engines/discover.py).

    Returns:
        0.

    Raises:
        UsageError: ``--min-size`` or ``--fit-frames`` < 1, or ``--max-depth`` < 0; an ``--out``
            where nothing can be written.
        OutputFailed: the report or a proposal could not be written (a full disk; exit 3).
        ModelError: no ``--model`` and no installed bundle.
        InputError: no frames in the folder, or the bundle refused (a ValueError or
            FileNotFoundError of the library).
    """
    from tir.engines.discover import discover

    if args.min_size < 1 or args.max_depth < 0 or args.fit_frames < 1:
        raise UsageError("--min-size and --fit-frames must be >= 1 and --max-depth >= 0")
    bundle = args.model
    if bundle is None:
        from tir.engines.bundle import default_bundle_path

        bundle = default_bundle_path()
        if bundle is None:
            raise ModelError("no bundle installed; pass --model BUNDLE (the one the frames were collected with)")
    from tir.engines.discover import check_collection_folder

    with refusing(ValueError, FileNotFoundError, kind=InputError):   # the input first: the default --out is in it
        check_collection_folder(args.source)
    out = Path(args.out) if args.out else Path(args.source) / "discover"
    problem = folder_problem(out)   # found before the clustering, not by a traceback after it
    if problem:
        raise UsageError(f"--out {out}: {problem}; give a writable folder (nothing was clustered)")
    with refusing(ValueError, FileNotFoundError, kind=InputError):  # no frames there, a refused bundle
        report = discover(args.source, bundle, out, min_size=args.min_size, max_depth=args.max_depth,
                          known_margin=args.known_margin, seed=args.seed, propose_specs=not args.no_propose,
                          fit_frames=args.fit_frames)
    nodes = {n["id"]: n for n in report["nodes"]}
    print(f"tir discover: {report['frames']} frames, {len(report['leaves'])} clusters "
          f"({len(report['new'])} new)" + (f", purity {100 * report['purity']:.1f} %" if report["purity"] is not None else ""))
    for i in report["leaves"]:
        n = nodes[i]
        label = f", labels {n['labels']}" if n.get("labels") else ""
        print(f"  #{i} {n['status']:5s} n={n['size']:3d} nearest {n['nearest']} sim {n['similarity']:.3f} "
              f"(threshold {n['threshold']:.3f}) spread {n['spread']:.3f}{label}")
    for p in report["proposals"]:
        steps = ", ".join(f"{s['op']}({', '.join(f'{k}={v}' for k, v in s.items() if k != 'op')})" for s in p["steps"])
        verdict = (f"fits (residual {p['residual']} <= {p['tolerance']})" if p["fits"]
                   else f"NO FIT ({p.get('reason')})")
        print(f"  proposal #{p['node']} -> {p['file']}: {steps or 'no op'}; {verdict}")
    for g in report["groups"]:
        p = g["proposal"]
        steps = ", ".join(f"{s['op']}({', '.join(f'{k}={v}' for k, v in s.items() if k != 'op')})" for s in p["steps"])
        label = f", labels {g['labels']}, purity {100 * g['purity']:.1f} %" if g.get("labels") else ""
        print(f"  new degradation {g['id']}: leaves {g['leaves']}, {g['size']} frames{label}; "
              f"{p['file']}: {steps or 'no op'}; " + (f"fits (residual {p['residual']})" if p["fits"] else "NO FIT"))
    if isinstance(report.get("plots"), str):
        print(f"tir discover: plots {report['plots']}")
    print(f"tir discover: report {out / 'report.json'}")
    return 0

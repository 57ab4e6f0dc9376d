"""Share a model or a run's relabeled dataset: the command line of eqn/model_folder.py and eqn/relabeled.py.

python -m eqn.export ckpt=<run>/checkpoints/eqn.ckpt out=<folder> [push_to_hub=<repo id>] [private=false]
python -m eqn.export builtin out=<folder>         # the built-in annotator, merged: a transformers folder
python -m eqn.export run=<run dir> dataset=true   # <run>/hub_dataset, loadable by datasets.load_from_disk
"""

from __future__ import annotations

import sys
from pathlib import Path

from eqn.errors import ConfigError, DataError
from eqn.hub import push_to_hub
from eqn.model_folder import export

USAGE = (
    "usage: python -m eqn.export ckpt=<checkpoint>|builtin [out=<folder>] [overwrite=true] [push_to_hub=<repo id>] "
    "[private=true] | run=<run dir> dataset=true [overwrite=true] [push_to_hub=<repo id>]"
)


def main(argv: list[str] | None = None) -> None:
    from eqn.cli import one_line, parse

    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] == ["builtin"]:  # python -m eqn.export builtin out=<folder>: the built-in annotator
        argv = ["ckpt=builtin", *argv[1:]]
    args = parse(
        argv,
        "eqn.export",
        USAGE,
        known=("ckpt", "out", "push_to_hub", "private", "dataset", "run", "overwrite"),
        bools=("private", "dataset", "overwrite"),
        doc=__doc__,
    )
    dataset, overwrite = args.get("dataset", False), args.get("overwrite", False)
    if "run" in args and not dataset:
        sys.exit(
            "eqn.export: run=<run dir> exports the run's relabeled dataset: add dataset=true (to export a "
            "model, give ckpt=<run>/checkpoints/<stage>.ckpt)"
        )
    if dataset and "out" in args:
        sys.exit("eqn.export: dataset=true writes <run>/hub_dataset; out= applies to models only")
    if not dataset and "ckpt" not in args:
        sys.exit(f"eqn.export: missing ckpt ({USAGE})")
    if dataset and "run" not in args and "ckpt" not in args:
        sys.exit(f"eqn.export: missing run ({USAGE})")
    if args.get("push_to_hub"):  # before any work: an upload that cannot happen writes no export either
        from eqn.hub import offline_flag

        if offline_flag():
            sys.exit(
                f"eqn.export: push_to_hub={args['push_to_hub']}: {offline_flag()}=1 is set in the environment; "
                "unset it to upload (nothing was written)"
            )
    with one_line("eqn.export"):
        if dataset:
            from eqn.relabeled import dataset_folder

            run_dir = Path(args["run"]) if "run" in args else Path(args["ckpt"]).resolve().parent.parent
            if not run_dir.is_dir():
                raise DataError(run_dir, "run dir not found")
            folder = dataset_folder(run_dir, overwrite)
            repo_type = "dataset"
        else:
            if args["ckpt"] == "builtin" and not args.get("out"):
                raise ConfigError("python -m eqn.export builtin needs out=<folder>")
            folder = export(args["ckpt"], args.get("out") or Path(args["ckpt"]).with_suffix(""), overwrite=overwrite)
            repo_type = "model"
        print(f"exported {folder}")
        if args.get("push_to_hub"):
            print(f"pushed: {push_to_hub(folder, args['push_to_hub'], args.get('private', False), repo_type)}")


if __name__ == "__main__":
    main()

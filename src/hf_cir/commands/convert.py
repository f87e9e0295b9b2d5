"""`hf-cir convert NAME`: turn a released reference checkpoint into a loadable folder.

The subcommands are the converters the model families register (`hf_cir.families`, `ModelFamily.converters`).
"""

from __future__ import annotations

import argparse

from ._common import add_progress_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    from hf_cir.families import model_families

    families = list(model_families().values())
    titles = [spec.label for family in families for spec in family.methods]
    parser = subparsers.add_parser(
        "convert",
        help=f"convert a released {', '.join(titles[:-1])} or {titles[-1]} checkpoint",
        description="Convert a checkpoint in a reference implementation's format into a safetensors folder.",
    )
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for family in families:
        for converter in family.converters:
            subcommand = models.add_parser(
                converter.name,
                help=converter.help,
                epilog=converter.example,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            for argument in converter.arguments:
                subcommand.add_argument(
                    argument.flag,
                    dest=argument.dest,
                    metavar=argument.flag.lstrip("-").upper().replace("-", "_"),
                    required=argument.required,
                    default=None,
                    help=argument.help,
                )
            subcommand.add_argument("--output-dir", required=True, help=f"where to write the {family.title} folder")
            subcommand.add_argument(
                "--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this repo"
            )
            if converter.overwrite:
                _add_output_arguments(subcommand)
            else:
                add_progress_argument(subcommand)  # the converter writes only into a new or empty --output-dir
            subcommand.set_defaults(func=_run_converter, family=family.name, converter=converter.name)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier conversion at --output-dir (nothing else)"
    )
    add_progress_argument(parser)


def _check_output_dir(args: argparse.Namespace, kind) -> None:
    """Refuse an unusable --output-dir before any weights load (a conversion can take minutes)."""
    from pathlib import Path

    from hf_cir.utils.io import check_replaceable

    output = Path(args.output_dir)
    overwrite = getattr(args, "overwrite", False)
    if output.exists() and not (output.is_dir() and not any(output.iterdir())) and not overwrite:
        hint = "pass --overwrite to replace an earlier conversion, or " if hasattr(args, "overwrite") else ""
        raise FileExistsError(f"--output-dir: {output} already exists and is not empty; {hint}choose a new folder.")
    check_replaceable(output, kind, argument="--output-dir")


def _run_converter(args: argparse.Namespace) -> int:
    from hf_cir.families import get_model_family, method_spec, read_model_folder, resolve

    family = get_model_family(args.family)
    converter = next(converter for converter in family.converters if converter.name == args.converter)
    _check_output_dir(args, family.load("folder_kind"))
    kwargs = {argument.dest: getattr(args, argument.dest) for argument in converter.arguments}
    kwargs.update(output_dir=args.output_dir, push_to_hub=args.push_to_hub)
    if converter.overwrite:
        kwargs["overwrite"] = args.overwrite
    resolve(converter.function)(**kwargs)
    print(f"Wrote {method_spec(read_model_folder(args.output_dir).method).label} to {args.output_dir}")
    return 0

"""`hf-cir convert {lincir,searle,pic2word,compodiff}`: turn a released reference checkpoint into a loadable folder."""

from __future__ import annotations

import argparse

from ._common import add_progress_argument

LINCIR_EXAMPLE = """example:
  hf-cir convert lincir --phi-checkpoint lincir_large.pt --clip openai/clip-vit-large-patch14 --output-dir lincir-large
"""

SEARLE_EXAMPLE = """examples:
  hf-cir convert searle --phi-checkpoint SEARLE_ViT-L14.pt --clip openai/clip-vit-large-patch14 --output-dir searle-xl
  hf-cir convert searle --phi-checkpoint SEARLE_ViT-B32.pt --clip openai/clip-vit-base-patch32 --output-dir searle

The released files are SEARLE_ViT-B32.pt and SEARLE_ViT-L14.pt (miccunifi/SEARLE); each goes with the transformers
copy of the OpenAI CLIP it was trained on.
"""

PIC2WORD_EXAMPLE = """examples:
  hf-cir convert pic2word --checkpoint pic2word_model.pt --clip openai/clip-vit-large-patch14 --output-dir pic2word
  hf-cir convert pic2word --checkpoint pic2word_large.pt --clip openai/clip-vit-large-patch14 --output-dir pic2word

pic2word_model.pt is the training checkpoint google-research/composed_image_retrieval releases (only its
'state_dict_img2text' is used); pic2word_large.pt is the copy LinCIR's demo loads. Both were trained on OpenAI's
CLIP ViT-L/14.
"""

# `hf-cir convert <method>` for the textual-inversion family: (help, example, checkpoint flag, checkpoint help,
# module and function in hf_cir.conversion)
TEXTUAL_INVERSION_CONVERTERS = {
    "lincir": (
        "a navervision/lincir phi checkpoint (torch pickle with key 'Phi')",
        LINCIR_EXAMPLE,
        "--phi-checkpoint",
        "the released phi file, e.g. lincir_large.pt",
        "convert_lincir_checkpoint",
    ),
    "searle": (
        "a miccunifi/SEARLE phi checkpoint (torch pickle with key 'Phi')",
        SEARLE_EXAMPLE,
        "--phi-checkpoint",
        "the released phi file, e.g. SEARLE_ViT-L14.pt",
        "convert_searle_checkpoint",
    ),
    "pic2word": (
        "a google-research/composed_image_retrieval (Pic2Word) checkpoint (key 'state_dict_img2text')",
        PIC2WORD_EXAMPLE,
        "--checkpoint",
        "the released checkpoint, e.g. pic2word_model.pt",
        "convert_pic2word_checkpoint",
    ),
}

COMPODIFF_EXAMPLE = """example:
  hf-cir convert compodiff --checkpoint navervision/CompoDiff-Aesthetic \\
      --text-encoder laion/CLIP-ViT-bigG-14-laion2B-39B-b160k \\
      --image-encoder openai/clip-vit-large-patch14 --output-dir compodiff-aesthetic
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a released LinCIR, SEARLE, Pic2Word or CompoDiff checkpoint",
        description="Convert a checkpoint in a reference implementation's format into a safetensors folder.",
    )
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)

    for method, (help_text, example, checkpoint_flag, checkpoint_help, _) in TEXTUAL_INVERSION_CONVERTERS.items():
        converter = models.add_parser(
            method, help=help_text, epilog=example, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        converter.add_argument(checkpoint_flag, dest="checkpoint", required=True, help=checkpoint_help)
        converter.add_argument(
            "--clip", required=True, help="the transformers CLIPModel it was trained on (folder or Hub id)"
        )
        converter.add_argument("--output-dir", required=True, help=f"where to write the {method} folder")
        converter.add_argument(
            "--tokenizer", default=None, help="tokenizer folder or Hub id (default: the one with --clip)"
        )
        converter.add_argument(
            "--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this repo"
        )
        add_progress_argument(converter)  # the converters write only into a new or empty --output-dir
        converter.set_defaults(func=_run_textual_inversion)

    compodiff = models.add_parser(
        "compodiff",
        help="a navervision/CompoDiff checkpoint (folder or state-dict file)",
        epilog=COMPODIFF_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compodiff.add_argument("--checkpoint", required=True, help="reference CompoDiffModel folder or state-dict file")
    compodiff.add_argument("--text-encoder", required=True, help="CLIPTextModel folder or Hub id")
    compodiff.add_argument("--image-encoder", required=True, help="CLIPVisionModelWithProjection folder or Hub id")
    compodiff.add_argument("--tokenizer", default=None, help="default: the one found with --text-encoder")
    compodiff.add_argument("--image-processor", default=None, help="default: the one found with --image-encoder")
    compodiff.add_argument("--output-dir", required=True, help="where to write the CompoDiffPipeline folder")
    compodiff.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this repo"
    )
    _add_output_arguments(compodiff)
    compodiff.set_defaults(func=_run_compodiff)


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


def _run_textual_inversion(args: argparse.Namespace) -> int:
    import importlib

    from hf_cir.hub import method_card_info
    from hf_cir.hub.saving import LINCIR_FOLDER

    _check_output_dir(args, LINCIR_FOLDER)

    function_name = TEXTUAL_INVERSION_CONVERTERS[args.model][-1]
    convert = getattr(importlib.import_module(f"hf_cir.conversion.{args.model}"), function_name)
    model = convert(args.checkpoint, args.clip, args.output_dir, args.tokenizer, args.push_to_hub)
    print(f"Wrote {method_card_info(model.config.method_name).title} to {args.output_dir}")
    return 0


def _run_compodiff(args: argparse.Namespace) -> int:
    from hf_cir.conversion.compodiff import convert_compodiff_checkpoint
    from hf_cir.hub.saving import COMPODIFF_FOLDER

    _check_output_dir(args, COMPODIFF_FOLDER)
    convert_compodiff_checkpoint(
        checkpoint=args.checkpoint,
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        output_dir=args.output_dir,
        tokenizer=args.tokenizer,
        image_processor=args.image_processor,
        push_to_hub=args.push_to_hub,
        overwrite=args.overwrite,
    )
    print(f"Wrote CompoDiffPipeline to {args.output_dir}")
    return 0

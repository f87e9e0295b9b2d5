"""`hf-cir convert {lincir,compodiff}`: turn a released reference checkpoint into a loadable folder."""

from __future__ import annotations

import argparse

LINCIR_EXAMPLE = """example:
  hf-cir convert lincir --phi-checkpoint lincir_large.pt --clip openai/clip-vit-large-patch14 --output-dir lincir-large
"""

COMPODIFF_EXAMPLE = """example:
  hf-cir convert compodiff --checkpoint navervision/CompoDiff-Aesthetic \\
      --text-encoder laion/CLIP-ViT-bigG-14-laion2B-39B-b160k \\
      --image-encoder openai/clip-vit-large-patch14 --output-dir compodiff-aesthetic
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a released LinCIR or CompoDiff checkpoint",
        description="Convert a checkpoint in a reference implementation's format into a safetensors folder.",
    )
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)

    lincir = models.add_parser(
        "lincir",
        help="a navervision/lincir phi checkpoint (torch pickle with key 'Phi')",
        epilog=LINCIR_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lincir.add_argument("--phi-checkpoint", required=True, help="the released phi file, e.g. lincir_large.pt")
    lincir.add_argument(
        "--clip", required=True, help="the transformers CLIPModel it was trained on (folder or Hub id)"
    )
    lincir.add_argument("--output-dir", required=True, help="where to write the LinCIR folder")
    lincir.add_argument("--tokenizer", default=None, help="tokenizer folder or Hub id (default: the one with --clip)")
    lincir.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload the folder to this repo")
    lincir.set_defaults(func=_run_lincir)

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
    compodiff.set_defaults(func=_run_compodiff)


def _run_lincir(args: argparse.Namespace) -> int:
    from hf_cir.conversion.lincir import convert_lincir_checkpoint

    convert_lincir_checkpoint(
        phi_checkpoint=args.phi_checkpoint,
        clip_name_or_path=args.clip,
        output_dir=args.output_dir,
        tokenizer_name_or_path=args.tokenizer,
        push_to_hub=args.push_to_hub,
    )
    print(f"Wrote LinCIR to {args.output_dir}")
    return 0


def _run_compodiff(args: argparse.Namespace) -> int:
    from hf_cir.conversion.compodiff import convert_compodiff_checkpoint

    convert_compodiff_checkpoint(
        checkpoint=args.checkpoint,
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        output_dir=args.output_dir,
        tokenizer=args.tokenizer,
        image_processor=args.image_processor,
        push_to_hub=args.push_to_hub,
    )
    print(f"Wrote CompoDiffPipeline to {args.output_dir}")
    return 0

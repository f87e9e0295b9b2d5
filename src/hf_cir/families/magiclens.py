"""The MagicLens family (Zhang et al., ICML 2024): one transformers model (`MagicLensModel`) that embeds a composed
query and a gallery image (with the empty text) with the same CLIP + fusion network."""

from .registry import Converter, ConverterArgument, MethodSpec, ModelFamily, register_model_family

MAGICLENS = register_model_family(
    ModelFamily(
        name="magiclens",
        title="MagicLens",
        methods=(
            MethodSpec(
                "magiclens",
                "MagicLens",
                reference_pixels=True,  # the fusion reads the reference's CLIP image embedding, not a gallery row
                # google-deepmind/magiclens `data_utils.py`: the query texts of its own evaluation.
                query_texts={
                    "circo": "find {shared_concept} but {relative_caption}",
                    "fashioniq": "{captions[0]} and {captions[1]}",
                },
            ),
        ),
        baselines=("image",),  # no text-only embedding in its (multimodal) gallery space: no `text` / `sum`
        config_model_type="magiclens",
        retrieval_model="hf_cir.retrieval.adapters.magiclens:MagicLensRetrievalModel",
        model_classes=("hf_cir.models.magiclens.modeling_magiclens:MagicLensModel",),
        model_card="hf_cir.hub.magiclens:create_magiclens_model_card",
        card_template="magiclens.md",
        save="hf_cir.hub.magiclens:save_magiclens_folder",
        folder_kind="hf_cir.hub.magiclens:MAGICLENS_FOLDER",
        auto_classes={
            "AutoConfig": "hf_cir.models.magiclens.configuration_magiclens:MagicLensConfig",
            "AutoModel": "hf_cir.models.magiclens.modeling_magiclens:MagicLensModel",
            "AutoImageProcessor": "hf_cir.models.magiclens.processing_magiclens:MagicLensImageProcessor",
            "AutoProcessor": "hf_cir.models.magiclens.processing_magiclens:MagicLensProcessor",
        },
        converters=(
            Converter(
                "magiclens",
                "a google-deepmind/magiclens release (magic_lens_clip_base.pkl / magic_lens_clip_large.pkl)",
                "example:\n  hf-cir convert magiclens --checkpoint magic_lens_clip_large.pkl --output-dir magiclens-large\n"
                "  hf-cir convert magiclens --checkpoint magic_lens_clip_large.pkl --image-protocol evaluation \\\n"
                "      --output-dir magiclens-large-eval   # preprocessing of the published benchmark numbers\n\n"
                "Every size is read from the checkpoint's parameters. The pickle is read without unpickling any "
                "object: a file\nthat holds anything but one bytes object of flax msgpack parameters is refused.\n",
                "hf_cir.conversion.magiclens:convert_magiclens_checkpoint",
                (
                    ConverterArgument(
                        "--checkpoint", "checkpoint", "the released pickle, e.g. magic_lens_clip_large.pkl", True
                    ),
                    ConverterArgument(
                        "--tokenizer",
                        "tokenizer",
                        "CLIP tokenizer folder or Hub id (default: OpenAI's, built offline)",
                    ),
                    ConverterArgument(
                        "--image-protocol",
                        "image_protocol",
                        "the image processor's protocol: model (default: the model's own centred square crop) or "
                        "evaluation (the reference evaluation script's preprocessing, behind the published numbers)",
                    ),
                ),
                overwrite=True,
            ),
        ),
    )
)

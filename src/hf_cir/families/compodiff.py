"""The CompoDiff family: a diffusers pipeline whose diffusion prior samples the target's CLIP image embedding from
the reference image, the text, an optional negative text and an optional mask."""

from .registry import Converter, ConverterArgument, MethodSpec, ModelFamily, register_model_family

COMPODIFF = register_model_family(
    ModelFamily(
        name="compodiff",
        title="CompoDiff",
        # Without a reference image CompoDiff samples from the text alone.
        methods=(
            MethodSpec(
                "compodiff", "CompoDiff", reference="optional", mask=True, negative_text=True, image_embedding=True
            ),
        ),
        clip_text_baseline=False,  # its text baseline is a text-only sample of the prior
        pipeline_class="CompoDiffPipeline",
        retrieval_model="hf_cir.retrieval.adapters.compodiff:CompoDiffRetrievalModel",
        model_classes=("hf_cir.pipelines.compodiff.pipeline_compodiff:CompoDiffPipeline",),
        model_card="hf_cir.hub.model_cards:create_compodiff_model_card",
        card_template="compodiff.md",
        save="hf_cir.hub.saving:save_compodiff_folder",
        folder_kind="hf_cir.hub.saving:COMPODIFF_FOLDER",
        remote_code="hf_cir.hub.remote_code:add_compodiff_remote_code",
        converters=(
            Converter(
                "compodiff",
                "a navervision/CompoDiff checkpoint (folder or state-dict file)",
                "example:\n  hf-cir convert compodiff --checkpoint navervision/CompoDiff-Aesthetic \\\n"
                "      --text-encoder laion/CLIP-ViT-bigG-14-laion2B-39B-b160k \\\n"
                "      --image-encoder openai/clip-vit-large-patch14 --output-dir compodiff-aesthetic\n",
                "hf_cir.conversion.compodiff:convert_compodiff_checkpoint",
                (
                    ConverterArgument(
                        "--checkpoint", "checkpoint", "reference CompoDiffModel folder or state-dict file", True
                    ),
                    ConverterArgument("--text-encoder", "text_encoder", "CLIPTextModel folder or Hub id", True),
                    ConverterArgument(
                        "--image-encoder", "image_encoder", "CLIPVisionModelWithProjection folder or Hub id", True
                    ),
                    ConverterArgument("--tokenizer", "tokenizer", "default: the one found with --text-encoder"),
                    ConverterArgument(
                        "--image-processor", "image_processor", "default: the one found with --image-encoder"
                    ),
                ),
                overwrite=True,
            ),
        ),
        sampling_options=(
            "num_inference_steps",
            "guidance_scale",
            "image_guidance_scale",
            "num_samples_per_prompt",
            "seed",
            "preset",
            "scheduler",
            "precision",
            "text_cache_size",
        ),
    )
)

"""The LinCIR family: LinCIR, SEARLE and Pic2Word, one transformers model class (`LinCIRModel`) whose config names
its method (`config.method_name`): a phi network turns the reference image into a pseudo word of a CLIP text query."""

from .registry import Converter, ConverterArgument, MethodSpec, ModelFamily, register_model_family

_CLIP = ConverterArgument(
    "--clip", "clip_name_or_path", "the transformers CLIPModel it was trained on (folder or Hub id)", True
)
_TOKENIZER = ConverterArgument(
    "--tokenizer", "tokenizer_name_or_path", "tokenizer folder or Hub id (default: the one with --clip)"
)

LINCIR = register_model_family(
    ModelFamily(
        name="lincir",
        title="LinCIR",
        methods=(
            MethodSpec("lincir", "LinCIR"),
            MethodSpec("searle", "SEARLE"),
            MethodSpec("pic2word", "Pic2Word"),
        ),
        config_model_type="lincir",
        method_config_key="method_name",
        retrieval_model="hf_cir.retrieval.adapters.lincir:LinCIRRetrievalModel",
        model_classes=("hf_cir.models.lincir.modeling_lincir:LinCIRModel",),
        model_card="hf_cir.hub.model_cards:create_lincir_model_card",
        card_template="lincir.md",
        save="hf_cir.hub.saving:save_lincir_folder",
        folder_kind="hf_cir.hub.saving:LINCIR_FOLDER",
        remote_code="hf_cir.hub.remote_code:add_lincir_remote_code",
        auto_classes={
            "AutoConfig": "hf_cir.models.lincir.configuration_lincir:LinCIRConfig",
            "AutoModel": "hf_cir.models.lincir.modeling_lincir:LinCIRModel",
            "AutoProcessor": "hf_cir.models.lincir.processing_lincir:LinCIRProcessor",
        },
        converters=(
            Converter(
                "lincir",
                "a navervision/lincir phi checkpoint (torch pickle with key 'Phi')",
                "example:\n  hf-cir convert lincir --phi-checkpoint lincir_large.pt --clip openai/clip-vit-large-patch14 "
                "--output-dir lincir-large\n",
                "hf_cir.conversion.lincir:convert_lincir_checkpoint",
                (
                    ConverterArgument(
                        "--phi-checkpoint", "phi_checkpoint", "the released phi file, e.g. lincir_large.pt", True
                    ),
                    _CLIP,
                    _TOKENIZER,
                ),
            ),
            Converter(
                "searle",
                "a miccunifi/SEARLE phi checkpoint (torch pickle with key 'Phi')",
                "examples:\n"
                "  hf-cir convert searle --phi-checkpoint SEARLE_ViT-L14.pt --clip openai/clip-vit-large-patch14 "
                "--output-dir searle-xl\n"
                "  hf-cir convert searle --phi-checkpoint SEARLE_ViT-B32.pt --clip openai/clip-vit-base-patch32 "
                "--output-dir searle\n\n"
                "The released files are SEARLE_ViT-B32.pt and SEARLE_ViT-L14.pt (miccunifi/SEARLE); each goes with the "
                "transformers\ncopy of the OpenAI CLIP it was trained on.\n",
                "hf_cir.conversion.searle:convert_searle_checkpoint",
                (
                    ConverterArgument(
                        "--phi-checkpoint", "phi_checkpoint", "the released phi file, e.g. SEARLE_ViT-L14.pt", True
                    ),
                    _CLIP,
                    _TOKENIZER,
                ),
            ),
            Converter(
                "pic2word",
                "a google-research/composed_image_retrieval (Pic2Word) checkpoint (key 'state_dict_img2text')",
                "examples:\n"
                "  hf-cir convert pic2word --checkpoint pic2word_model.pt --clip openai/clip-vit-large-patch14 "
                "--output-dir pic2word\n"
                "  hf-cir convert pic2word --checkpoint pic2word_large.pt --clip openai/clip-vit-large-patch14 "
                "--output-dir pic2word\n\n"
                "pic2word_model.pt is the training checkpoint google-research/composed_image_retrieval releases (only "
                "its\n'state_dict_img2text' is used); pic2word_large.pt is the copy LinCIR's demo loads. Both were "
                "trained on OpenAI's\nCLIP ViT-L/14.\n",
                "hf_cir.conversion.pic2word:convert_pic2word_checkpoint",
                (
                    ConverterArgument(
                        "--checkpoint", "checkpoint", "the released checkpoint, e.g. pic2word_model.pt", True
                    ),
                    _CLIP,
                    _TOKENIZER,
                ),
            ),
        ),
    )
)

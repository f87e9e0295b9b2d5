"""MagicLens behind the retrieval interface: the gallery is embedded by the whole network with the empty text (as the
reference embeds its index), a query by the same network with the reference image and the instruction."""

from __future__ import annotations

from ..models import ProcessorRetrievalModel, fingerprint_modules

__all__ = ["MagicLensRetrievalModel"]


class MagicLensRetrievalModel(ProcessorRetrievalModel):
    """A [`MagicLensModel`] with its processor behind the retrieval interface.

    MagicLens's gallery space is its multimodal embedding, so it has no text-only embedding there (its methods are
    `magiclens` and the `image` baseline; `text` and `sum` are refused), and a query needs the reference image itself (the fusion reads its
    CLIP image embedding, which a stored gallery row is not).

    Example:

    ```python
    >>> from hf_cir.retrieval.adapters.magiclens import MagicLensRetrievalModel
    >>> model = MagicLensRetrievalModel.from_pretrained("path/to/magiclens-folder")  # doctest: +SKIP
    >>> MagicLensRetrievalModel.model_type
    'magiclens'
    ```
    """

    model_type = "magiclens"
    # No `text` / `sum` baselines: MagicLens has no text-only embedding in its (multimodal) gallery space.
    methods = ("magiclens", "image")
    default_method = "magiclens"

    @classmethod
    def model_classes(cls):
        from ...models.magiclens import MagicLensModel, MagicLensProcessor

        return MagicLensModel, MagicLensProcessor

    def _encode_texts(self, texts):
        raise ValueError(
            f"{self.name_or_path} is a MagicLens model: its gallery embeddings are multimodal (image + empty text), "
            "so it has no text-only embedding to compare with them; use its own method or the image baseline."
        )

    def _compose(self, texts, images, image_embeds, negative_texts, mask_images):
        if images is None:
            raise ValueError(
                "MagicLens composes a query from the reference image itself (its fusion reads the image's CLIP "
                "embedding, which a stored gallery embedding is not): give the image, not a stored embedding."
            )
        inputs = self.processor(images=images, text=texts)
        return self.model.get_composed_features(
            inputs["pixel_values"].to(self.device),
            inputs["input_ids"].to(self.device),
            inputs["attention_mask"].to(self.device),
            return_dict=True,
        ).pooler_output

    def gallery_fingerprint(self) -> str:
        # The gallery embedding runs the whole network (with the empty text): every weight counts.
        return fingerprint_modules(
            "magiclens", self.model, self.processor.image_processor.to_dict(), str(self.model.dtype)
        )

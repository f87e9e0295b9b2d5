"""MagicLens behind the retrieval interface: the gallery is embedded by the whole network with the empty text (as the
reference embeds its index), a query by the same network with the reference image and the instruction."""

from __future__ import annotations

import os
from functools import partial

import torch

from ..models import RetrievalModel, fingerprint_modules, pixel_values

__all__ = ["MagicLensRetrievalModel"]


class MagicLensRetrievalModel(RetrievalModel):
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

    def __init__(self, model, processor, name_or_path: str = "", device: torch.device | str | None = None):
        super().__init__(name_or_path or getattr(model, "name_or_path", ""), device)
        self.model = model.to(self.device).eval()
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> MagicLensRetrievalModel:
        if kwargs:
            raise ValueError(f"MagicLens models take no sampling settings; got {sorted(kwargs)}.")
        from ...models.magiclens import MagicLensModel, MagicLensProcessor

        model = MagicLensModel.from_pretrained(name_or_path, dtype=dtype)
        processor = MagicLensProcessor.from_pretrained(name_or_path)
        return cls(model, processor, str(name_or_path), device)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _encode_images(self, images):
        return self._encode_pixels(self.processor(images=images)["pixel_values"])

    def _encode_pixels(self, pixel_values):
        return self.model.get_image_features(pixel_values.to(self.device), return_dict=True).pooler_output

    def image_preprocessor(self):
        return partial(pixel_values, self.processor.image_processor)

    @torch.no_grad()
    def encode_pixel_values(self, pixel_values):
        self.encode_image_calls += 1
        return self._encode_pixels(pixel_values).float().cpu()

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

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def gallery_fingerprint(self) -> str:
        # The gallery embedding runs the whole network (with the empty text): every weight counts.
        return fingerprint_modules(
            "magiclens", self.model, self.processor.image_processor.to_dict(), str(self.model.dtype)
        )

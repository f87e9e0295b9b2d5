"""The LinCIR family (LinCIR, SEARLE, Pic2Word) behind the retrieval interface."""

from __future__ import annotations

import os
from functools import partial

import torch

from ..models import BASELINE_METHODS, RetrievalModel, fingerprint_modules, pixel_values

__all__ = ["LinCIRRetrievalModel"]


class LinCIRRetrievalModel(RetrievalModel):
    """A [`LinCIRModel`] with its processor behind the retrieval interface.

    Example:

    ```python
    >>> from hf_cir.retrieval import LinCIRRetrievalModel
    >>> model = LinCIRRetrievalModel.from_pretrained("path/to/lincir-model")  # doctest: +SKIP
    >>> LinCIRRetrievalModel.methods
    ('lincir', 'image', 'text', 'sum')
    ```
    """

    model_type = "lincir"
    methods = ("lincir",) + BASELINE_METHODS
    default_method = "lincir"

    def __init__(self, model, processor, name_or_path: str = "", device: torch.device | str | None = None):
        super().__init__(name_or_path or getattr(model, "name_or_path", ""), device)
        self.model = model.to(self.device).eval()
        self.processor = processor
        # A SEARLE or Pic2Word folder is a LinCIR-family model whose config names its method.
        self.default_method = model.config.method_name
        self.methods = (self.default_method,) + BASELINE_METHODS

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> LinCIRRetrievalModel:
        if kwargs:
            raise ValueError(f"LinCIR models take no sampling settings; got {sorted(kwargs)}.")
        from ...models.lincir import LinCIRModel, LinCIRProcessor

        model = LinCIRModel.from_pretrained(name_or_path, dtype=dtype)
        processor = LinCIRProcessor.from_pretrained(name_or_path)
        return cls(model, processor, str(name_or_path), device)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _encode_images(self, images):
        return self._encode_pixels(self.processor(images=images, return_tensors="pt")["pixel_values"])

    def _encode_pixels(self, pixel_values):
        return self.model.get_image_features(pixel_values.to(self.device), return_dict=True).pooler_output

    def image_preprocessor(self):
        return partial(pixel_values, self.processor.image_processor)

    @torch.no_grad()
    def encode_pixel_values(self, pixel_values):
        self.encode_image_calls += 1
        return self._encode_pixels(pixel_values).float().cpu()

    def _tokenize(self, texts: list[str], compose: bool):
        encoding = self.processor(text=texts, compose=compose, return_tensors="pt")
        return encoding["input_ids"].to(self.device), encoding["attention_mask"].to(self.device)

    def _encode_texts(self, texts):
        input_ids, attention_mask = self._tokenize(texts, compose=False)
        return self.model.get_text_features(input_ids, attention_mask=attention_mask, return_dict=True).pooler_output

    def _compose(self, texts, images, image_embeds, negative_texts, mask_images):
        if image_embeds is None:
            image_embeds = self._encode_images(images)
        input_ids, attention_mask = self._tokenize(texts, compose=True)
        composed = self.model.get_composed_features(
            input_ids, image_embeds=image_embeds, attention_mask=attention_mask, return_dict=True
        )
        return composed.pooler_output

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def gallery_fingerprint(self) -> str:
        return fingerprint_modules(
            "lincir", self.model.vision_model, self.processor.image_processor.to_dict(), str(self.model.dtype)
        )

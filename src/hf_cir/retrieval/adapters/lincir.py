"""The LinCIR family (LinCIR, SEARLE, Pic2Word) behind the retrieval interface."""

from __future__ import annotations

import torch

from ..models import BASELINE_METHODS, ProcessorRetrievalModel, fingerprint_modules

__all__ = ["LinCIRRetrievalModel"]


class LinCIRRetrievalModel(ProcessorRetrievalModel):
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

    @classmethod
    def model_classes(cls):
        from ...models.lincir import LinCIRModel, LinCIRProcessor

        return LinCIRModel, LinCIRProcessor

    def __init__(self, model, processor, name_or_path: str = "", device: torch.device | str | None = None):
        super().__init__(model, processor, name_or_path, device)
        # A SEARLE or Pic2Word folder is a LinCIR-family model whose config names its method.
        self.default_method = model.config.method_name
        self.methods = (self.default_method,) + BASELINE_METHODS

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

    def gallery_fingerprint(self) -> str:
        return fingerprint_modules(
            "lincir", self.model.vision_model, self.processor.image_processor.to_dict(), str(self.model.dtype)
        )

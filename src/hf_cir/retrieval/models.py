"""One retrieval interface for every model and method: LinCIR, SEARLE, Pic2Word, CompoDiff, and the image / text /
sum baselines.

A `RetrievalModel` wraps a loaded checkpoint. It embeds gallery images (`encode_images`) and turns queries
(reference images or their cached embeddings, modification texts) into query embeddings (`encode_queries`) with
one of the methods:

- `lincir`: LinCIR's composed features ("a photo of $ that {text}" with phi(image) at `$`); LinCIR models only.
- `searle`, `pic2word`: the same for SEARLE and Pic2Word folders (LinCIR-family models whose config names the
  method: `config.method_name`, the model's own method).
- `compodiff`: CompoDiff's sampled image embedding for (image, text[, negative text, mask]); CompoDiff only.
- `image`: the reference image embedding alone.
- `text`: the text alone: CLIP's projected text features (LinCIR), or CompoDiff's text-only sample (no image
  condition), since a CompoDiff pipeline has no projected text tower.
- `sum`: the sum of the L2-normalised image and text embeddings.

Every embedding is returned unnormalised, as float32 on the CPU; retrieval normalises.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image

from ..families import ModelFolder, method_spec, read_model_folder
from ..families import check_method as _check_method
from ..utils import load_image
from .methods import BASELINE_METHODS, METHODS, REFERENCE_IMAGE_METHODS, TEXTUAL_INVERSION_METHODS

__all__ = [
    "BASELINE_METHODS",
    "METHODS",
    "REFERENCE_IMAGE_METHODS",
    "TEXTUAL_INVERSION_METHODS",
    "ProcessorRetrievalModel",
    "RetrievalModel",
    "default_device",
    "detect_model_type",
    "detect_own_method",
    "fingerprint_modules",
    "load_retrieval_model",
    "pixel_values",
]


def default_device() -> torch.device:
    """The device accelerate picks for this process (CUDA, MPS, XPU, NPU, ... or CPU)."""
    from accelerate import PartialState

    return PartialState().device


def fingerprint_modules(*parts: Any) -> str:
    """A content hash of modules' parameters (names, shapes, sums) and of extra JSON-able settings."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                values = tensor.detach().double()
                digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
                digest.update(f"{values.sum().item():.10e}{values.abs().sum().item():.10e}".encode())
                digest.update(f"{(values.flatten()[::97] * 1.618).sum().item():.10e}".encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


class RetrievalModel(ABC):
    """Base class: embeds gallery images and composed queries with a chosen method.

    Use [`load_retrieval_model`] to get the right subclass for a folder or Hub id.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir.retrieval import load_retrieval_model
    >>> model = load_retrieval_model("path/to/lincir-model")  # doctest: +SKIP
    >>> gallery = model.encode_images([Image.new("RGB", (64, 64))])  # doctest: +SKIP
    >>> query = model.encode_queries(["is red"], image_embeds=gallery, method="lincir")  # doctest: +SKIP
    ```
    """

    model_type: ClassVar[str] = ""
    methods: ClassVar[tuple[str, ...]] = BASELINE_METHODS
    default_method: ClassVar[str] = "image"

    def __init__(self, name_or_path: str, device: torch.device | str | None = None):
        self.name_or_path = str(name_or_path)
        self.device = torch.device(device) if device is not None else default_device()
        self.encode_image_calls = 0  # number of image-encoder batches run (useful to check caching)

    # -- to implement ----------------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Size of the embeddings of images and queries."""

    @abstractmethod
    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Unnormalised image embeddings `[B, D]` of RGB images."""

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Text-only embeddings `[B, D]` in the image embedding space."""

    @abstractmethod
    def _compose(
        self,
        texts: list[str],
        images: list[Image.Image] | None,
        image_embeds: torch.Tensor | None,
        negative_texts: list[str] | None,
        mask_images: list[Any] | None,
    ) -> torch.Tensor:
        """The model's own composed query embeddings `[B, D]`."""

    @abstractmethod
    def gallery_fingerprint(self) -> str:
        """A string that changes whenever the image embeddings would change (weights, preprocessing)."""

    def image_preprocessor(self) -> Callable[[list[Image.Image]], torch.Tensor] | None:
        """A function from RGB images to the pixel values [`encode_pixel_values`] takes, run by DataLoader workers
        (the embedding engine); `None` when the model only embeds PIL images (`encode_images`)."""
        return None

    def encode_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings `[B, D]` (float32, CPU) of pixel values from [`image_preprocessor`]."""
        raise NotImplementedError(f"{type(self).__name__} embeds PIL images only (`encode_images`).")

    # -- shared ----------------------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The text tokenizer of the model (`None` when it has none)."""
        return None

    def _check_texts(self, texts: list, name: str) -> None:
        """Every text a non-empty string. (Words the tokenizer does not know are named in a warning by the processor
        or pipeline that encodes them: `hf_cir.utils.tokenization.warn_unknown_words`.)"""
        for number, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`{name}[{number}]` must be a string, got {type(text).__name__}.")
            if not text.strip():
                raise ValueError(f"`{name}[{number}]` is empty; give the words of the query.")

    def check_method(self, method: str | None, option: str = "Method") -> str:
        """Validate `method` for this model (`None` -> the model's own method) and return it; `option` is how the
        caller names the method in the error (e.g. `--method`)."""
        return _check_method(self.methods, self.name_or_path, method, option)

    @property
    def supports_masks(self) -> bool:
        """Whether the model's own method takes a mask (from the family registry)."""
        return method_spec(self.default_method).mask

    @property
    def supports_negative_text(self) -> bool:
        """Whether the model's own method takes a negative text (from the family registry)."""
        return method_spec(self.default_method).negative_text

    def enable_text_cache(self, size: int) -> None:  # noqa: B027 (optional: most models have nothing to cache)
        """Keep the encodings of up to `size` texts (models whose text side is expensive); a model that already has
        a cache keeps its own. Default: nothing to cache."""

    def settings(self) -> dict[str, Any]:
        """The per-query settings of the model's own method and their current values (e.g. CompoDiff's sampling
        settings and seed); empty when it has none."""
        return {}

    def with_settings(self, settings: dict[str, Any]) -> RetrievalModel:
        """A model sharing this one's weights with other per-query `settings` (keys of [`settings`]); this model is
        unchanged."""
        unknown = sorted(key for key, value in settings.items() if value is not None and key not in self.settings())
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {unknown} for {self.name_or_path}; expected some of {sorted(self.settings())}."
            )
        return self

    @torch.no_grad()
    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Unnormalised embeddings `[B, D]` (float32, CPU) of images (paths, PIL images or arrays)."""
        images = [load_image(image, name=f"images[{i}]") for i, image in enumerate(images)]
        if not images:
            return torch.empty(0, self.embedding_dim)
        self.encode_image_calls += 1
        return self._encode_images(images).float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text-only embeddings `[B, D]` (float32, CPU), the `text` baseline."""
        return self._encode_texts(list(texts)).float().cpu()

    @torch.no_grad()
    def encode_queries(
        self,
        texts: Sequence[str],
        images: Sequence[Any] | None = None,
        image_embeds: torch.Tensor | None = None,
        method: str | None = None,
        negative_texts: Sequence[str] | None = None,
        mask_images: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Query embeddings `[B, D]` (float32, CPU, unnormalised) for one text per query.

        Args:
            texts: The modification texts.
            images: The reference images (paths, PIL images or arrays), or
            image_embeds: their embeddings from `encode_images` (e.g. cached gallery rows).
            method: `lincir`, `compodiff`, `image`, `text` or `sum`; default: the model's own method.
            negative_texts: CompoDiff's negative texts, one per query.
            mask_images: CompoDiff's masks, one per query (needs `images`).
        """
        method = self.check_method(method)
        spec = method_spec(method)
        texts = list(texts)
        if spec.text != "refused":
            self._check_texts(texts, "texts")
        if negative_texts is not None:
            self._check_texts(list(negative_texts), "negative_texts")
        if images is not None and image_embeds is not None:
            raise ValueError("Give the reference images either as `images` or as `image_embeds`, not both.")
        if images is not None:
            images = [load_image(image, name=f"images[{i}]") for i, image in enumerate(images)]
        count = len(images) if images is not None else (image_embeds.shape[0] if image_embeds is not None else None)
        if count is not None and count != len(texts):
            raise ValueError(f"Got {count} reference images for {len(texts)} texts; the batch sizes must match.")
        if image_embeds is not None and (image_embeds.ndim != 2 or image_embeds.shape[-1] != self.embedding_dim):
            raise ValueError(
                f"`image_embeds` have shape {tuple(image_embeds.shape)}, but {self.name_or_path} embeds into "
                f"{self.embedding_dim} dimensions."
            )
        if image_embeds is not None and not bool(torch.isfinite(image_embeds).all()):
            raise ValueError("`image_embeds` hold non-finite values (NaN or infinity).")
        # The method's rules (hf_cir.families.MethodSpec), said with this function's argument names.
        spec.check(
            text=None if spec.text == "refused" else "given",
            reference=images is not None or image_embeds is not None,
            mask=mask_images is not None,
            negative_text="given" if negative_texts is not None else None,
            reference_image=images is not None,
            names={
                "reference": "a reference image (`images` or `image_embeds`)",
                "mask": "`mask_images`",
                "negative_text": "`negative_texts`",
                "text": "`texts`",
            },
            label=f"Method {method!r}",
        )
        if not spec.uses_reference:
            images = image_embeds = None
        if method in ("image", "sum") and image_embeds is None:
            image_embeds = self.encode_images(images)
        if method == "image":
            return image_embeds.float().cpu()
        if method == "text":
            return self.encode_texts(texts)
        if method == "sum":
            text_embeds = self.encode_texts(texts)
            return F.normalize(image_embeds.float().cpu(), dim=-1) + F.normalize(text_embeds, dim=-1)
        negative_texts = list(negative_texts) if negative_texts is not None else None
        mask_images = list(mask_images) if mask_images is not None else None
        for name, value in (("negative texts", negative_texts), ("masks", mask_images)):
            if value is not None and len(value) != len(texts):
                raise ValueError(f"Got {len(value)} {name} for {len(texts)} texts; give one per query.")
        embeds = None if image_embeds is None else image_embeds.to(self.device)
        return self._compose(texts, images, embeds, negative_texts, mask_images).float().cpu()


def detect_model_type(name_or_path: str | os.PathLike) -> str:
    """The model family of a folder or Hub repository (`"lincir"`, `"compodiff"`, ...), read from its files by the
    family registry ([`hf_cir.families.read_model_folder`]).

    Example:

    ```python
    >>> from hf_cir.retrieval import detect_model_type
    >>> from hf_cir.toy import toy_checkpoint
    >>> detect_model_type(toy_checkpoint("lincir"))
    'lincir'

    ```
    """
    return read_model_folder(name_or_path).family.name


def detect_own_method(name_or_path: str | os.PathLike) -> str:
    """The method a model folder implements: `"compodiff"`, or a LinCIR-family folder's `config.method_name`
    (`"lincir"`, `"searle"`, `"pic2word"`; `"lincir"` for folders written before the family had other members).

    Example:

    ```python
    >>> from hf_cir.retrieval.models import detect_own_method
    >>> from hf_cir.toy import toy_checkpoint
    >>> detect_own_method(toy_checkpoint("lincir"))
    'lincir'

    ```
    """
    return read_model_folder(name_or_path).method


def load_retrieval_model(
    name_or_path: str | os.PathLike | ModelFolder,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> RetrievalModel:
    """Load a model folder of any registered family (detected from its files) behind the retrieval interface.

    Args:
        name_or_path: A local folder or a Hub id, or a [`ModelFolder`] already read.
        device: Where to run; by default the device accelerate selects.
        dtype: Weights' dtype.
        kwargs: The family's settings (its `sampling_options`: CompoDiff's `num_inference_steps`, `guidance_scale`,
            `seed`, ...).

    Example:

    ```python
    >>> from hf_cir.retrieval import load_retrieval_model
    >>> model = load_retrieval_model("path/to/compodiff-pipeline", num_inference_steps=10)  # doctest: +SKIP
    >>> model.model_type  # doctest: +SKIP
    'compodiff'
    ```
    """
    folder = name_or_path if isinstance(name_or_path, ModelFolder) else read_model_folder(name_or_path)
    family = folder.family
    unknown = sorted(set(kwargs) - set(family.sampling_options))
    if unknown:
        takes = f"only {', '.join(family.sampling_options)}" if family.sampling_options else "no sampling settings"
        raise ValueError(f"{family.title} models take {takes}; got {unknown}.")
    adapter = family.load("retrieval_model")
    return adapter.from_pretrained(folder.name_or_path, device=device, dtype=dtype, **kwargs)


def pixel_values(image_processor, images: list[Image.Image]) -> torch.Tensor:
    """Pixel values of RGB images (a module-level function, so that DataLoader workers can receive it)."""
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


class ProcessorRetrievalModel(RetrievalModel):
    """Base of the adapters of transformers models that come with a processor (`LinCIRModel`, `MagicLensModel`, ...):
    loading, gallery-image embedding through `model.get_image_features` (pixel values from the processor's image
    processor, also in DataLoader workers), and the tokenizer. A subclass names its classes with `model_classes`
    and implements the text side (`_encode_texts`, `_compose`) and `gallery_fingerprint`.
    """

    @classmethod
    @abstractmethod
    def model_classes(cls) -> tuple[type, type]:
        """The `(model class, processor class)` a folder of this family loads with (imported on call)."""

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
    ) -> ProcessorRetrievalModel:
        if kwargs:
            raise ValueError(f"{cls.__name__} takes no sampling settings; got {sorted(kwargs)}.")
        model_class, processor_class = cls.model_classes()
        model = model_class.from_pretrained(name_or_path, dtype=dtype)
        processor = processor_class.from_pretrained(name_or_path)
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

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def __getattr__(name: str):
    # The adapters moved to `hf_cir.retrieval.adapters`; their old import path keeps working.
    if name in ("LinCIRRetrievalModel", "CompoDiffRetrievalModel"):
        import importlib

        module = importlib.import_module(f".adapters.{name[: -len('RetrievalModel')].lower()}", __package__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

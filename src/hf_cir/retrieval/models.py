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
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image

from ..utils import load_image
from .methods import BASELINE_METHODS, METHODS, REFERENCE_IMAGE_METHODS, TEXTUAL_INVERSION_METHODS

__all__ = [
    "BASELINE_METHODS",
    "METHODS",
    "REFERENCE_IMAGE_METHODS",
    "TEXTUAL_INVERSION_METHODS",
    "CompoDiffRetrievalModel",
    "LinCIRRetrievalModel",
    "RetrievalModel",
    "default_device",
    "detect_model_type",
    "detect_own_method",
    "load_retrieval_model",
]


def default_device() -> torch.device:
    """The device accelerate picks for this process (CUDA, MPS, XPU, NPU, ... or CPU)."""
    from accelerate import PartialState

    return PartialState().device


def _fingerprint_modules(*parts: Any) -> str:
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
    # Keyword arguments that only some methods accept, to reject silently ignored input.
    supports_masks: ClassVar[bool] = False
    supports_negative_text: ClassVar[bool] = False

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
        """Every text a non-empty string; words the tokenizer does not know are named in a warning."""
        import warnings

        from ..utils.tokenization import unknown_words

        for number, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`{name}[{number}]` must be a string, got {type(text).__name__}.")
            if not text.strip():
                raise ValueError(f"`{name}[{number}]` is empty; give the words of the query.")
        if self.tokenizer is not None:
            unknown = unknown_words(self.tokenizer, texts)
            if unknown:
                warnings.warn(
                    f"{self.name_or_path}'s tokenizer does not know the word(s) {', '.join(map(repr, unknown))}: "
                    "they are encoded as its unknown token.",
                    stacklevel=3,
                )

    def check_method(self, method: str | None) -> str:
        """Validate `method` for this model (`None` -> the model's own method) and return it."""
        method = self.default_method if method is None else method
        if method not in METHODS and method not in self.methods:
            raise ValueError(f"Unknown method {method!r}; expected one of: {', '.join(METHODS)}.")
        if method not in self.methods:
            raise ValueError(
                f"Method {method!r} needs a {method if method not in BASELINE_METHODS else ''} model, but "
                f"{self.name_or_path} is a {self.default_method} model; it supports: {', '.join(self.methods)}."
            )
        return method

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
        texts = list(texts)
        if method != "image":
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
        for name, value, allowed in (
            ("negative texts", negative_texts, self.supports_negative_text and method == "compodiff"),
            ("masks", mask_images, self.supports_masks and method == "compodiff"),
        ):
            if value is not None and not allowed:
                raise ValueError(f"Method {method!r} of this {self.model_type} model does not take {name}.")
        if mask_images is not None and images is None:
            raise ValueError("A mask needs the reference image itself (`images`), not a cached embedding.")
        own_composed = self.model_type == "lincir" and method == self.default_method
        needs_image = method in REFERENCE_IMAGE_METHODS or own_composed
        if needs_image and images is None and image_embeds is None:
            raise ValueError(f"Method {method!r} needs a reference image.")
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
    ) -> LinCIRRetrievalModel:
        from ..models.lincir import LinCIRModel, LinCIRProcessor

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
        return partial(_pixel_values, self.processor.image_processor)

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
        return _fingerprint_modules(
            "lincir", self.model.vision_model, self.processor.image_processor.to_dict(), str(self.model.dtype)
        )


class CompoDiffRetrievalModel(RetrievalModel):
    """A [`CompoDiffPipeline`] behind the retrieval interface.

    Sampling settings (`num_inference_steps`, guidance scales, samples per prompt, seed) are fixed per instance so
    that queries are reproducible: every call draws its noise from a generator seeded with `seed`. The noise of a
    query therefore depends on its position in the batch; the same batch gives the same embeddings.

    Speed settings, applied to the pipeline once: `preset` (a name of `SAMPLING_PRESETS`, e.g. `"interactive"`),
    `scheduler` (a class name among the scheduler's own and its `compatibles`), `precision` of the text encoder and
    the prior (`"float16"`, `"bfloat16"`, `"int8"`; see `CompoDiffPipeline.set_precision`) and `text_cache_size`
    (texts kept by the pipeline's text-encoding cache; 0: no cache). Explicit settings override the preset's.

    Example:

    ```python
    >>> from hf_cir.retrieval import CompoDiffRetrievalModel
    >>> model = CompoDiffRetrievalModel.from_pretrained("path/to/compodiff-pipeline")  # doctest: +SKIP
    >>> CompoDiffRetrievalModel.methods
    ('compodiff', 'image', 'text', 'sum')
    ```
    """

    model_type = "compodiff"
    methods = ("compodiff",) + BASELINE_METHODS
    default_method = "compodiff"
    supports_masks = True
    supports_negative_text = True

    def __init__(
        self,
        pipeline,
        name_or_path: str = "",
        device: torch.device | str | None = None,
        seed: int = 0,
        preset: str | None = None,
        scheduler: str | None = None,
        precision: str | None = None,
        text_cache_size: int = 0,
        **sampling_kwargs,
    ):
        super().__init__(name_or_path or getattr(pipeline, "name_or_path", ""), device)
        self.pipeline = pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        if preset is not None:
            self.pipeline.apply_preset(preset)
        if scheduler is not None:
            self.pipeline.set_scheduler(scheduler)
        if precision is not None:
            self.pipeline.set_precision(precision)
        if text_cache_size:
            self.pipeline.enable_text_encoding_cache(text_cache_size)
        self.seed = seed
        self.sampling_kwargs = sampling_kwargs

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> CompoDiffRetrievalModel:
        from ..pipelines.compodiff import CompoDiffPipeline

        pipeline = CompoDiffPipeline.from_pretrained(name_or_path, dtype=dtype)
        return cls(pipeline, str(name_or_path), device, **kwargs)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipeline.image_encoder.config.projection_dim)

    def _generator(self) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed)

    def _encode_images(self, images):
        return self.pipeline.encode_image(images)

    def image_preprocessor(self):
        return partial(_pixel_values, self.pipeline.image_processor)

    @torch.no_grad()
    def encode_pixel_values(self, pixel_values):
        self.encode_image_calls += 1
        return self.pipeline.encode_image(pixel_values).float().cpu()

    def _sample(self, texts, images=None, image_embeds=None, negative_texts=None, mask_images=None):
        kwargs = dict(self.sampling_kwargs)
        if negative_texts is not None:
            kwargs["negative_prompt"] = negative_texts
        if mask_images is not None:
            masks = [_open_mask(mask, index) for index, mask in enumerate(mask_images)]
            kwargs["mask_image"] = masks if len(masks) > 1 else masks[0]
        if images is not None:
            kwargs["image"] = images
        if image_embeds is not None:
            kwargs["image_embeds"] = image_embeds
        return self.pipeline(texts, generator=self._generator(), output_type="pt", **kwargs).image_embeds

    def _encode_texts(self, texts):
        return self._sample(texts)

    def _compose(self, texts, images, image_embeds, negative_texts, mask_images):
        return self._sample(texts, images, image_embeds, negative_texts, mask_images)

    @property
    def tokenizer(self):
        return self.pipeline.tokenizer

    def gallery_fingerprint(self) -> str:
        processor = self.pipeline.image_processor
        settings = processor.to_dict() if hasattr(processor, "to_dict") else repr(processor)
        return _fingerprint_modules("compodiff", self.pipeline.image_encoder, settings, str(self.pipeline.dtype))


def _pixel_values(image_processor, images: list[Image.Image]) -> torch.Tensor:
    """Pixel values of RGB images (a module-level function, so that DataLoader workers can receive it)."""
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


def _open_mask(mask: Any, index: int) -> Any:
    """Mask files are opened as single-channel images (white = the region the text may change)."""
    if isinstance(mask, (str, os.PathLike)):
        return load_image(mask, name=f"mask_images[{index}]").convert("L")
    if isinstance(mask, Image.Image) and mask.mode not in ("L", "1"):
        return load_image(mask).convert("L")
    return mask


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read {path}: {error}") from error
    return data if isinstance(data, dict) else {}


def _model_files(name_or_path: str | os.PathLike) -> dict[str, Path]:
    """The `model_index.json` / `config.json` of a model folder or Hub repository (those that exist)."""
    path = Path(name_or_path)
    files: dict[str, Path] = {}
    if path.is_dir():
        for name in ("model_index.json", "config.json"):
            if (path / name).is_file():
                files[name] = path / name
    elif path.exists() or str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"Model {name_or_path}: no such folder.")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

        errors = []
        for name in ("model_index.json", "config.json"):
            try:
                files[name] = Path(hf_hub_download(str(name_or_path), name))
                break
            except RemoteEntryNotFoundError:  # the repository exists but has no such file
                continue
            except LocalEntryNotFoundError as error:  # offline and not cached
                errors.append(f"{name}: not in the local cache and the Hub is unreachable ({error})")
            except Exception as error:  # offline, unknown repo, gated, ...
                errors.append(f"{name}: {type(error).__name__}: {error}")
        if not files and errors:
            raise OSError(
                f"Model {name_or_path!r} is not a local folder and could not be read from the Hub: "
                + "; ".join(errors)
            )
    return files


def detect_model_type(name_or_path: str | os.PathLike) -> str:
    """`"lincir"` or `"compodiff"`, read from a model folder's files or a Hub repository's.

    A LinCIR folder has a `config.json` with `"model_type": "lincir"`; a CompoDiff folder has a `model_index.json`
    whose `_class_name` is `"CompoDiffPipeline"`.

    Example:

    ```python
    >>> from hf_cir.retrieval import detect_model_type
    >>> detect_model_type("path/to/lincir-model")  # doctest: +SKIP
    'lincir'
    ```
    """
    files = _model_files(name_or_path)
    if "model_index.json" in files:
        class_name = _read_json(files["model_index.json"]).get("_class_name")
        if isinstance(class_name, list) and len(class_name) == 2:  # [module, class] of a custom-pipeline folder
            class_name = class_name[1]
        if class_name == "CompoDiffPipeline":
            return "compodiff"
        raise ValueError(
            f"Model {name_or_path}: model_index.json names the pipeline {class_name!r}; hf-cir runs "
            "'CompoDiffPipeline' pipelines and LinCIR models."
        )
    if "config.json" in files:
        model_type = _read_json(files["config.json"]).get("model_type")
        if model_type == "lincir":
            return "lincir"
        raise ValueError(
            f"Model {name_or_path}: config.json has model_type {model_type!r}; hf-cir runs LinCIR models "
            "(model_type 'lincir') and CompoDiff pipelines. A plain CLIP checkpoint becomes a LinCIR model with "
            "`LinCIRModel.from_clip`."
        )
    raise ValueError(
        f"Model {name_or_path}: neither a LinCIR model (config.json with model_type 'lincir') nor a CompoDiff "
        "pipeline (model_index.json with _class_name 'CompoDiffPipeline')."
    )


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
    if detect_model_type(name_or_path) == "compodiff":
        return "compodiff"
    return _read_json(_model_files(name_or_path)["config.json"]).get("method_name", "lincir")


def load_retrieval_model(
    name_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> RetrievalModel:
    """Load a LinCIR model or a CompoDiff pipeline (detected from its files) behind the retrieval interface.

    Args:
        name_or_path: A local folder or a Hub id.
        device: Where to run; by default the device accelerate selects.
        dtype: Weights' dtype.
        kwargs: CompoDiff sampling settings (`num_inference_steps`, `guidance_scale`, `seed`, ...).

    Example:

    ```python
    >>> from hf_cir.retrieval import load_retrieval_model
    >>> model = load_retrieval_model("path/to/compodiff-pipeline", num_inference_steps=10)  # doctest: +SKIP
    >>> model.model_type  # doctest: +SKIP
    'compodiff'
    ```
    """
    model_type = detect_model_type(name_or_path)
    if model_type == "lincir":
        if kwargs:
            raise ValueError(f"LinCIR models take no sampling settings; got {sorted(kwargs)}.")
        return LinCIRRetrievalModel.from_pretrained(name_or_path, device=device, dtype=dtype)
    return CompoDiffRetrievalModel.from_pretrained(name_or_path, device=device, dtype=dtype, **kwargs)

# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
"""LinCIR processor: a CLIP image processor and a CLIP tokenizer that put the placeholder where the image goes.

This file is self-contained (it imports only `transformers`, `PIL`, `numpy` and its sibling files): `save_pretrained`
copies it next to the tokenizer so that `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` works without
hf-cir installed. Where hf-cir is installed, images and texts go through its input checks (`hf_cir.utils`: the one RGB
conversion, the aspect-ratio bound and the unknown-word warning that its CLI, index and app use); a remote-code copy
without hf-cir falls back to the CLIP image processor's own RGB conversion and does not check words.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import ImageInput, load_image
from transformers.processing_utils import ProcessingKwargs, Unpack
from transformers.utils import logging

try:  # hf-cir's shared input checks (see the module docstring); optional, so that the remote-code copy stays usable.
    from hf_cir.utils.images import check_image_size as _check_image_size
    from hf_cir.utils.images import load_image as _load_image
    from hf_cir.utils.tokenization import warn_unknown_words as _warn_unknown_words
except ImportError:
    _check_image_size = _load_image = _warn_unknown_words = None

from .configuration_lincir import PLACEHOLDER_TOKEN, PROMPT_TEMPLATE, validate_prompt_template

logger = logging.get_logger(__name__)


def get_placeholder_token_id(tokenizer, placeholder_token: str = PLACEHOLDER_TOKEN) -> int:
    """The id `tokenizer` gives `placeholder_token` when it stands as a word in a text.

    Raises:
        ValueError: the tokenizer cannot encode the placeholder, splits it into several tokens, maps it to its unknown
            token, or gives it another id inside a sentence than alone.

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> from hf_cir.models.lincir.processing_lincir import get_placeholder_token_id
    >>> from hf_cir.toy import toy_checkpoint
    >>> get_placeholder_token_id(AutoTokenizer.from_pretrained(toy_checkpoint("clip")), "$")
    2
    ```
    """
    try:
        ids = tokenizer(placeholder_token, add_special_tokens=False)["input_ids"]
        # Between other words (here: itself, so that closed word-level vocabularies work too) it must keep its id.
        in_text = tokenizer(f"{placeholder_token} {placeholder_token}", add_special_tokens=False)["input_ids"]
    except Exception as error:  # e.g. a word-level `tokenizers` model without an unknown token raises a bare Exception
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '')!r}) cannot encode the "
            f"placeholder {placeholder_token!r}: {error}. LinCIR needs a tokenizer whose vocabulary holds the "
            "placeholder as one word, like the CLIP tokenizer for '$'."
        ) from error
    unk = tokenizer.unk_token_id
    if len(ids) != 1 or in_text != ids * 2:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '')!r}) has no single "
            f"token for the placeholder {placeholder_token!r} (it gives ids {ids}). LinCIR needs a tokenizer whose "
            "vocabulary holds the placeholder as one word, like the CLIP tokenizer for '$'."
        )
    if unk is not None and ids[0] == unk:
        raise ValueError(f"The tokenizer maps the placeholder {placeholder_token!r} to its unknown token (id {unk}).")
    return ids[0]


class LinCIRProcessorKwargs(ProcessingKwargs, total=False):
    """The keyword arguments of [`LinCIRProcessor.__call__`]: transformers' text and image kwargs, flat or nested
    (`text_kwargs={...}`, `images_kwargs={...}`, `common_kwargs={...}`). The defaults are the class attributes
    `LinCIRProcessor.text_kwargs` / `images_kwargs` (transformers 5's place for processor defaults); the tokenizer's
    own saved settings (e.g. its `max_length`) take precedence over them, call-time values over everything."""


class LinCIRProcessor(ProcessorMixin):
    r"""
    Constructs a LinCIR processor from a CLIP image processor and a CLIP tokenizer.

    A text that holds the placeholder (`$`) is used as written; a text without it is put into `prompt_template`
    (`"a photo of $ that {}"`) when an image comes with it. By default texts are padded to the tokenizer's context
    (`model_max_length`, 77 for CLIP) and truncated with the EOS token kept, and tensors are PyTorch tensors; images of
    any PIL mode become RGB. Text without images is used as written (captions, text-to-image queries); a placeholder
    with no image to stand for is rejected by [`LinCIRModel.get_composed_features`].

    Args:
        image_processor ([`CLIPImageProcessor`]): The image processor.
        tokenizer ([`CLIPTokenizer`]): The tokenizer; it must hold `placeholder_token` as one token.
        placeholder_token (`str`, *optional*, defaults to `"$"`): The word that stands for the image.
        prompt_template (`str`, *optional*, defaults to `"a photo of $ that {}"`): The template for texts without
            placeholder, or `None` to require the placeholder in every text that comes with an image.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_cir import LinCIRProcessor
    >>> from hf_cir.toy import toy_checkpoint
    >>> processor = LinCIRProcessor.from_pretrained(toy_checkpoint("lincir"))
    >>> inputs = processor(images=[Image.new("RGB", (40, 30))] * 2, text=["is red", "$ on the left"])
    >>> processor.batch_decode(inputs["input_ids"], skip_special_tokens=True)
    ['a photo of $ that is red', '$ on the left']
    >>> inputs["pixel_values"].shape
    torch.Size([2, 3, 32, 32])
    >>> processor(text="a red circle", text_kwargs={"padding": "longest"})["input_ids"].shape
    torch.Size([1, 5])
    ```"""

    valid_processor_kwargs = LinCIRProcessorKwargs
    # Defaults (lowest priority): pad and truncate to the tokenizer's context, return PyTorch tensors.
    text_kwargs = {"padding": "max_length", "truncation": True, "return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        placeholder_token: str = PLACEHOLDER_TOKEN,
        prompt_template: str | None = PROMPT_TEMPLATE,
        **kwargs,
    ):
        if image_processor is None:
            raise ValueError("LinCIRProcessor needs an `image_processor` (a CLIP image processor).")
        if tokenizer is None:
            raise ValueError("LinCIRProcessor needs a `tokenizer` (a CLIP tokenizer).")
        super().__init__(image_processor, tokenizer, **kwargs)
        self.placeholder_token_id = get_placeholder_token_id(tokenizer, placeholder_token)
        if prompt_template is not None:
            validate_prompt_template(prompt_template, placeholder_token)
        self.placeholder_token = placeholder_token
        self.prompt_template = prompt_template

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        r"""
        Load a processor; `placeholder_token` and `prompt_template`, when given, override the saved ones.

        They are taken out of `kwargs` first: passed on, the tokenizer would register any `*_token` keyword as a new
        special token and the placeholder would get a new id.
        """
        overrides = {key: kwargs.pop(key) for key in ("placeholder_token", "prompt_template") if key in kwargs}
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        # A saved `auto_map` is a property of the folder, rewritten by every `save_pretrained` from the registered
        # auto class; kept as an attribute it would make a loaded processor differ from the one that was saved.
        processor.__dict__.pop("auto_map", None)
        if not overrides:
            return processor
        settings = {"placeholder_token": processor.placeholder_token, "prompt_template": processor.prompt_template}
        return cls(processor.image_processor, processor.tokenizer, **{**settings, **overrides})

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # transformers leaves the written `auto_map` on the saved object; drop it again (see `from_pretrained`).
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)

    def __call__(
        self,
        images: ImageInput | str | os.PathLike | list | None = None,
        text: str | list[str] | None = None,
        compose: bool | None = None,
        **kwargs: Unpack[LinCIRProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepare reference images and modification texts for [`LinCIRModel`] (`model(**inputs)` or
        `get_composed_features`), or either one alone (`images` for `get_image_features`, `text` for
        `get_text_features`).

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, path, `torch.Tensor` or a list of them, *optional*):
                The reference images; any PIL mode (RGBA, grayscale, palette, ...) is converted to RGB. Also in the
                nested format of transformers' multimodal processors, one list per text: `[[image], [], [image]]`
                (a text whose list is empty has no reference image and is used as written, a text query; the
                returned `pixel_values` hold the given images only, in order).
            text (`str` or `list[str]`, *optional*):
                The texts. With images, a text without the placeholder goes into `prompt_template`.
            compose (`bool`, *optional*):
                Whether the texts are composed queries (template applied, placeholder required). Defaults to whether
                `images` are given; pass `True` to prepare queries whose image embeddings are already computed.
            kwargs ([`LinCIRProcessorKwargs`]):
                Tokenizer and image processor settings, flat (`padding="longest"`, `do_resize=False`) or nested
                (`text_kwargs={"max_length": 32}`, `images_kwargs={...}`, `common_kwargs={"return_tensors": "np"}`).
                Truncation keeps the EOS token and logs a warning.

        Returns:
            [`BatchFeature`] with `input_ids` and `attention_mask` (when `text` is given) and `pixel_values` (when
            `images` are given).

        Raises:
            ValueError: nothing to process; image and text batches of different sizes; a text without placeholder
                and no `prompt_template`; a placeholder that truncation cut off; an empty image.
        """
        if images is None and text is None:
            raise ValueError("LinCIRProcessor needs `images`, `text` or both.")
        output_kwargs = self._merge_kwargs(
            LinCIRProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, images_kwargs = output_kwargs["text_kwargs"], output_kwargs["images_kwargs"]
        data = {}
        texts = None
        if text is not None:
            if isinstance(text, str):
                texts = [text]
            elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
                texts = list(text)
            else:
                raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
        # Which samples come with a reference image: all of them, or (transformers' nested format, one list per
        # sample) those whose list holds one.
        with_image = None
        if images is not None:
            images, with_image = self._per_sample_images(images)
            prepared = self._prepare_images(images) if with_image is None or images else []
            with_image = [True] * len(prepared) if with_image is None else with_image
            if texts is not None and len(with_image) != len(texts):
                raise ValueError(
                    f"Got {len(with_image)} images and {len(texts)} texts: each reference image needs exactly one "
                    "modification text (the batch sizes must match)."
                )
            if prepared:
                data.update(self.image_processor(prepared, **images_kwargs))
        if texts is not None:
            if compose is not None:
                composed = [compose] * len(texts)
            else:
                composed = with_image if with_image is not None else [False] * len(texts)
            texts = [self._apply_template(t, i) if composed[i] else t for i, t in enumerate(texts)]
            if _warn_unknown_words is not None:
                _warn_unknown_words(self.tokenizer, texts, stacklevel=2)
            encoding = self.tokenizer(texts, **text_kwargs)
            self._check_truncation(texts, encoding, text_kwargs, composed)
            data.update(encoding)
        return_tensors = (
            text_kwargs.get("return_tensors") if texts is not None else images_kwargs.get("return_tensors")
        )
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _per_sample_images(images) -> tuple[list, list[bool] | None]:
        """`(the images, whether each sample has one)`; the latter is `None` for a flat batch (every sample has its
        image). The nested format of transformers' multimodal processors (`[[image], [], [image]]`) gives a sample no
        image with `[]`, and its text is then used as written (a text query)."""
        if not isinstance(images, (list, tuple)) or not any(isinstance(item, (list, tuple)) for item in images):
            return images, None
        flat, with_image = [], []
        for index, item in enumerate(images):
            item = list(item) if isinstance(item, (list, tuple)) else [item]
            if len(item) > 1:
                raise ValueError(
                    f"`images[{index}]` holds {len(item)} images: LinCIR composes each text with one reference image."
                )
            flat += item
            with_image.append(bool(item))
        return flat, with_image

    def _check_truncation(self, texts: list[str], encoding, text_kwargs: dict, composed: list[bool]) -> None:
        if not text_kwargs.get("truncation"):
            return
        max_length = text_kwargs.get("max_length") or self.tokenizer.model_max_length
        full_lengths = [len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"]]
        truncated = [i for i, length in enumerate(full_lengths) if length > max_length]
        if truncated:
            logger.warning(
                f"Texts {truncated} are longer than the {max_length}-token context and were truncated (the EOS "
                "token is kept)."
            )
        for i, ids in enumerate(encoding["input_ids"]):
            if composed[i] and self.placeholder_token_id not in (ids.tolist() if hasattr(ids, "tolist") else ids):
                raise ValueError(
                    f"The placeholder {self.placeholder_token!r} of text {i} lies beyond the "
                    f"{max_length}-token context and was truncated away; shorten the text."
                )

    def _apply_template(self, text: str, index: int) -> str:
        if self.placeholder_token_id in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            return text
        if self.prompt_template is None:
            raise ValueError(
                f"Text {index} ({text!r}) has no placeholder {self.placeholder_token!r} and the processor has no "
                "`prompt_template`: write the placeholder where the reference image belongs, e.g. "
                f"'a photo of {self.placeholder_token} that ...'."
            )
        return self.prompt_template.replace("{}", text, 1)

    def _prepare_images(self, images) -> list:
        # With hf-cir installed, paths, PIL images and (H, W[, C]) arrays become RGB through its one conversion (the
        # CLI's, the index's and the app's); otherwise the image processor (`do_convert_rgb`) converts every PIL mode,
        # compositing transparent pixels over white. An empty image is refused either way, and with hf-cir an absurd
        # aspect ratio too, before the image processor's resize could blow it up.
        if isinstance(images, (list, tuple)):
            images = list(images)
        elif hasattr(images, "ndim") and not isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)  # a torch batch (batch, channels, height, width)
        else:
            images = [images]
        if not images:
            raise ValueError("`images` is an empty list.")
        prepared = []
        for i, image in enumerate(images):
            name = f"images[{i}]"
            is_channels_last_array = isinstance(image, np.ndarray) and (
                image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 3, 4))
            )
            if _load_image is not None and (
                isinstance(image, (str, os.PathLike, Image.Image)) or is_channels_last_array
            ):
                image = _load_image(image, name=name)
            elif isinstance(image, (str, os.PathLike)):
                image = _open_image(image, name)
            elif isinstance(image, np.ndarray) and image.ndim == 2:
                image = Image.fromarray(image)
            width, height = image.size if isinstance(image, Image.Image) else _array_size(image)
            if _check_image_size is not None:
                _check_image_size(width, height, name=name)
            elif 0 in (width, height):
                raise ValueError(f"`{name}` is empty ({width}x{height} pixels).")
            prepared.append(image)
        return prepared


def _array_size(image) -> tuple[int, int]:
    """`(width, height)` of an array or tensor image, channels first or last (as the image processor infers it)."""
    from transformers.image_utils import get_image_size, to_numpy_array

    array = to_numpy_array(image) if not isinstance(image, np.ndarray) else image
    if 0 in array.shape:
        return 0, 0
    height, width = get_image_size(array)
    return width, height


def _open_image(path: str | os.PathLike, name: str) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}`: no such file: {path}")
    try:
        return load_image(str(path))  # transformers' own loader: EXIF orientation applied, RGB
    except Image.DecompressionBombError as error:
        raise ValueError(f"`{name}`: {path} is refused as a possible decompression bomb ({error}).") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"`{name}`: {path} is not a readable image ({error}).") from error


__all__ = ["LinCIRProcessor", "LinCIRProcessorKwargs", "get_placeholder_token_id"]

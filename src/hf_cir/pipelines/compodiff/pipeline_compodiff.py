# Copyright 2026 The hf-cir authors. Licensed under the Apache License, Version 2.0.
#
# This file imports only torch, numpy, PIL, transformers, diffusers and the standard library: it is also the
# `pipeline_compodiff.py` of the Hub remote-code layout (see pipelines/compodiff/README.md), which must load in a
# process that never imported hf_cir. The prior and the scheduler are used through their public methods only. Where
# hf-cir is installed, images and texts go through its input checks (`hf_cir.utils`: the one RGB conversion, the
# aspect-ratio bound, the unknown-word warning of its CLI, index and app); without it, diffusers' and the image
# processor's own conversion applies and words are not checked.
"""CompoDiff as a diffusers pipeline: (reference image, text, mask) -> composed CLIP image embedding."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, load_image, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPVisionModelWithProjection, PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

try:  # hf-cir's shared input checks (see the header); optional, so that the remote-code copy stays usable.
    from hf_cir.utils.images import load_image as _hf_cir_load_image
    from hf_cir.utils.tokenization import warn_unknown_words as _warn_unknown_words
except ImportError:
    _hf_cir_load_image = _warn_unknown_words = None

__all__ = [
    "SAMPLING_PRESETS",
    "CompoDiffPipeline",
    "CompoDiffPipelineOutput",
    "TextEncodingCache",
    "add_remote_code",
    "binarize_mask",
    "preprocess_mask",
]

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from hf_cir import CompoDiffPipeline
        >>> from hf_cir.toy import toy_checkpoint

        >>> # The shipped toy CompoDiff (it knows the toy world's words); a converted release loads the same way.
        >>> pipe = CompoDiffPipeline.from_pretrained(toy_checkpoint("compodiff"))
        >>> pipe.set_progress_bar_config(disable=True)
        >>> image = Image.new("RGB", (32, 32), (220, 30, 30))
        >>> query = pipe(
        ...     "make it blue", image=image, negative_prompt="a green object",
        ...     guidance_scale=1.5, image_guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
        ... ).image_embeds  # L2-normalise it to search CLIP image embeddings
        >>> tuple(query.shape) == (1, pipe.prior.config.embedding_dim)
        True
        >>> gallery = pipe.encode_image([image, Image.new("RGB", (32, 32), (30, 30, 220))])
        >>> scores = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(gallery, dim=-1).T
        >>> tuple(scores.shape)
        (1, 2)
        ```
"""

# "pt" / "np": the composed query embeddings as torch / numpy; "latent": the raw samples of the prior (torch), before
# they are averaged per query and mixed with the reference image (as diffusers' image pipelines return latents).
OUTPUT_TYPES = ("pt", "np", "latent")
PRECISIONS = ("float32", "float16", "bfloat16", "int8")

# Named sampling settings for `CompoDiffPipeline.apply_preset`, chosen with benchmarks/bench_compodiff_quality.py
# (toy retrieval quality against the default 10-step float32 path, full-size query time). `precision="auto"` is
# int8 on a CPU and float16 on an accelerator.
SAMPLING_PRESETS: dict[str, dict] = {
    "interactive": {
        "scheduler": "DPMSolverMultistepScheduler",
        "scheduler_kwargs": {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        "num_inference_steps": 6,
        "num_samples_per_prompt": 2,
        "precision": "auto",
        # Distinct texts kept by the text-encoding cache the preset turns on (unless one is on already): the
        # negative prompt, shared by every query, is encoded once instead of once per query.
        "text_encoding_cache": 64,
    },
}
SINGLE_CHANNEL_MODES = ("1", "L", "I", "I;16", "F")
# Libraries diffusers loads components from by name; a component of any other class gets its module file copied.
PEER_LIBRARIES = ("diffusers", "transformers")
# The model_index.json key recording the importable module of each class whose file the folder carries.
PACKAGE_MODULES_KEY = "_package_modules"


def add_remote_code(folder: str | os.PathLike, classes: dict[str, type]) -> Path:
    """
    Give a saved pipeline folder the Hub remote-code layout: each class's module file is copied verbatim (the
    pipeline's to the folder root, a component's into its subfolder) and `model_index.json` names it as
    `["file_stem", "ClassName"]`, which `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` loads
    without the package installed. The importable module of each class is recorded under `_package_modules`, so
    that the package's own `CompoDiffPipeline.from_pretrained` loads the folder with the installed classes instead
    (see [`CompoDiffPipeline.load_config`]).

    Args:
        folder (`str` or `os.PathLike`): A folder written by `save_pretrained`.
        classes (`dict[str, type]`): `"_class_name"` -> the pipeline class, and component name -> class, for every
            class diffusers cannot import by name (components of diffusers and transformers keep their entries).
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline folder: no model_index.json.")
    index = json.loads(index_path.read_text())
    modules = dict(index.get(PACKAGE_MODULES_KEY, {}))
    for name, cls in classes.items():
        if name != "_class_name" and name not in index:
            raise ValueError(f"{index_path} has no component {name!r}.")
        source = Path(inspect.getsourcefile(cls))
        target = folder / source.name if name == "_class_name" else folder / name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.resolve() != source.resolve():
            shutil.copyfile(source, target)
        index[name] = [source.stem, cls.__name__]
        if not cls.__module__.startswith("diffusers_modules."):  # a module loaded from a folder is not importable
            modules[name] = cls.__module__
    if modules:
        index[PACKAGE_MODULES_KEY] = modules
    temporary = index_path.with_name(index_path.name + ".tmp")
    temporary.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, index_path)
    return folder


def binarize_mask(grid: torch.Tensor, mask_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """
    `(pixel-grid mask, prior-side mask)` of a mask grid `(batch, 1, H, W)`: binarised at 0.5 (1 = masked), then
    resized to `(mask_size, mask_size)` with a bilinear, antialiased resize (torchvision's `Resize` on tensors in the
    reference demo) and binarised again. The prior-side mask has shape `(batch, mask_size, mask_size)`.
    """
    grid = (grid > 0.5).float()
    small = F.interpolate(grid, size=(mask_size, mask_size), mode="bilinear", align_corners=False, antialias=True)
    return grid, (small > 0.5).float()[:, 0]


def preprocess_mask(
    mask_images: list[PIL.Image.Image], image_processor: BaseImageProcessor, mask_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The one mask preparation of CompoDiff, shared by the pipeline and the training data
    (`training/precompute_embeddings.py`): single-channel PIL masks (white = masked) go through the image
    processor's resize and crop without normalisation, then [`binarize_mask`].

    Returns:
        `(pixel-grid mask (batch, 1, H, W), prior-side mask (batch, mask_size, mask_size))`, both 0/1.

    Example:

    ```python
    >>> import PIL.Image
    >>> from transformers import CLIPImageProcessorPil
    >>> from hf_cir.pipelines.compodiff.pipeline_compodiff import preprocess_mask
    >>> mask = PIL.Image.new("L", (64, 48), 0)
    >>> mask.paste(255, (0, 0, 32, 48))  # the left half is masked
    >>> processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    >>> pixel_mask, prior_mask = preprocess_mask([mask], processor, mask_size=8)
    >>> tuple(pixel_mask.shape), prior_mask[0, 0].tolist()
    ((1, 1, 32, 32), [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    ```
    """
    converted = []
    for index, mask in enumerate(mask_images):
        if not isinstance(mask, PIL.Image.Image):
            raise TypeError(f"`mask_image` list items must be PIL images, got {type(mask).__name__} at {index}.")
        if mask.mode not in SINGLE_CHANNEL_MODES:
            raise ValueError(
                f"`mask_image` must have a single channel, got mode {mask.mode!r} with {len(mask.getbands())} "
                "channels; convert it, e.g. `mask.convert('L')` (white = masked)."
            )
        converted.append(mask.convert("L").convert("RGB"))
    grid = image_processor(images=converted, do_normalize=False, return_tensors="pt").pixel_values[:, :1]
    return binarize_mask(grid, mask_size)


def _is_package_module(module: str, package: str) -> bool:
    # Only modules of the loading class's own package are imported (a folder cannot name other code to run).
    if module.split(".")[0] != package:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class TextEncodingCache:
    """
    A bounded least-recently-used cache of text conditions (the text encoder's last hidden state of one text).

    Entries are keyed by the exact text and belong to one text encoder and tokenizer (held by weak references),
    on one device, in one dtype, with one module structure (so quantising or patching the encoder in place is
    noticed): when any of these changes, the cache empties itself. Weights loaded into the same modules in place
    are not noticed: call `clear()` after doing so. Lookups return new tensors, so callers cannot alter entries.

    Args:
        max_entries (`int`, *optional*, defaults to 256): Texts kept; the least recently used is dropped first.

    Example:

    ```python
    >>> import torch
    >>> from hf_cir.pipelines.compodiff.pipeline_compodiff import TextEncodingCache
    >>> cache = TextEncodingCache(max_entries=2)
    >>> encoder, tokenizer = torch.nn.Linear(2, 2), object.__new__(type("Tokenizer", (), {}))
    >>> cache.bind(encoder, tokenizer, torch.device("cpu"))
    >>> cache.put(["a", "b", "c"], torch.zeros(3, 4, 8))
    >>> len(cache), "a" in cache, cache.get(["c", "b"]).shape
    (2, False, torch.Size([2, 4, 8]))
    ```
    """

    def __init__(self, max_entries: int = 256):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"`max_entries` must be a positive integer, got {max_entries!r}.")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._owner: tuple | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: str) -> bool:
        return text in self._entries

    def clear(self) -> None:
        self._entries.clear()

    def bind(self, text_encoder: torch.nn.Module, tokenizer, device: torch.device) -> None:
        """Empty the cache unless it was filled by this encoder and tokenizer, on `device`, unchanged since."""
        parameter = next(text_encoder.parameters(), None)
        state = (
            torch.device(device),
            parameter.dtype if parameter is not None else None,
            getattr(tokenizer, "model_max_length", None),
            tuple(type(module).__name__ for module in text_encoder.modules()),
        )
        owner = self._owner
        if owner is None or owner[0]() is not text_encoder or owner[1]() is not tokenizer or owner[2] != state:
            self.clear()
            self._owner = (weakref.ref(text_encoder), weakref.ref(tokenizer), state)

    def put(self, texts: list[str], encodings: torch.Tensor) -> None:
        for text, encoding in zip(texts, encodings):
            self._entries[text] = encoding.detach().clone()
            self._entries.move_to_end(text)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def touch(self, texts: list[str]) -> None:
        """Mark `texts` (all held) as the most recently used, so that storing others next does not drop them."""
        for text in texts:
            self._entries.move_to_end(text)

    def get(self, texts: list[str]) -> torch.Tensor:
        self.touch(texts)
        return torch.stack([self._entries[text] for text in texts])


@dataclass
class CompoDiffPipelineOutput(BaseOutput):
    """
    Output of [`CompoDiffPipeline`].

    Args:
        image_embeds (`torch.Tensor` or `np.ndarray` of shape `(batch_size * num_images_per_prompt, embedding_dim)`):
            The composed query embeddings, `num_images_per_prompt` per prompt (prompt by prompt), each the mean of
            its `num_samples_per_prompt` samples, not normalised (L2-normalise them before a cosine search). With
            `output_type="latent"`: the prior's raw samples, shape `(batch_size * num_images_per_prompt *
            num_samples_per_prompt, embedding_dim)` (rows grouped by returned embedding), before the averaging and
            `source_weight`.
    """

    image_embeds: torch.Tensor | np.ndarray


class CompoDiffPipeline(DiffusionPipeline):
    r"""
    Composed image retrieval with CompoDiff (Gu et al., "CompoDiff: Versatile Composed Image Retrieval With Latent
    Diffusion", TMLR 2024): a diffusion prior that turns a reference image, a modification text and an optional
    mask into a CLIP image embedding to search with.

    Sampling runs classifier-free guidance with three branches per step, `cond` = (image, prompt), `null_text` =
    (image, negative prompt), `null_all` = (zero image, negative prompt), combined as `null_all + guidance_scale *
    (cond - null_text) + image_guidance_scale * (null_text - null_all)`.

    Speed: by default the step-independent work (the text projection, the mask MLP and every block's
    cross-attention keys/values of each context) is computed once per call with `prior.prepare_context` and shared
    by all steps, by the samples of a prompt, and by the two branches that share the negative prompt; in text-only
    mode the two negative branches have identical inputs and are computed once. Set `pipe.use_context_cache =
    False` to run the plain path instead, which recomputes everything at every step as the reference does (the
    outputs agree to float32 rounding). For an interactive query, `pipe.apply_preset("interactive")` samples with
    fewer steps in a lower precision (see [`~CompoDiffPipeline.apply_preset`]); `enable_text_encoding_cache` reuses
    the encodings of repeated texts.

    Schedulers: [`CompoDiffScheduler`] reproduces the reference sampler exactly. The diffusers schedulers in
    `pipe.scheduler.compatibles` also work, made with `pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`
    (equivalently `DDIMScheduler(prediction_type="sample", beta_schedule="squaredcos_cap_v2", clip_sample=False)`); they
    give different (not reference) results: DDIM's
    grid is `num_inference_steps` evaluations on its own spacing (e.g. 900, 800, ..., 0), its default `eta` is 0
    (deterministic), its final step uses `alphas_cumprod` of the step (not the reference's shifted
    `alphas_cumprod_prev` tables), and `clip_sample=True` (its default) would clamp embeddings to [-1, 1].

    Args:
        prior ([`CompoDiffPriorTransformer`]): The denoiser.
        scheduler ([`CompoDiffScheduler`] or a diffusers scheduler with `prediction_type="sample"`): The sampler.
        text_encoder ([`~transformers.CLIPTextModel`], *optional*): Its last hidden state over all positions (padded
            to the tokenizer's maximum length, with each text's own attention mask) is the text condition.
        tokenizer ([`~transformers.CLIPTokenizer`], *optional*): The text encoder's tokenizer.
        image_encoder ([`~transformers.CLIPVisionModelWithProjection`], *optional*): Its `image_embeds` are the
            image condition (and the space of the output).
        image_processor ([`~transformers.CLIPImageProcessor`], *optional*): Preprocesses images for the encoder.

    The encoders are optional: without them, pass `prompt_embeds`, `negative_prompt_embeds` and `image_embeds`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->prior"
    _optional_components = ["text_encoder", "tokenizer", "image_encoder", "image_processor"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        prior: ModelMixin,
        scheduler: SchedulerMixin,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        image_processor: BaseImageProcessor | None = None,
        default_guidance_scale: float = 7.5,
        default_image_guidance_scale: float = 1.5,
        default_num_inference_steps: int = 10,
        default_num_samples_per_prompt: int = 2,
    ):
        super().__init__()
        self.register_modules(
            prior=prior,
            scheduler=scheduler,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            image_encoder=image_encoder,
            image_processor=image_processor,
        )
        # The checkpoint's own sampling defaults (`model_index.json`; a folder without them gets the reference's
        # 7.5 / 1.5, 10 steps, 2 samples): what `__call__` uses for an argument left at None. `apply_preset` changes
        # the steps and samples; `set_sampling_defaults` any of them.
        self.register_to_config(
            default_guidance_scale=default_guidance_scale,
            default_image_guidance_scale=default_image_guidance_scale,
            default_num_inference_steps=default_num_inference_steps,
            default_num_samples_per_prompt=default_num_samples_per_prompt,
        )
        self.use_context_cache = True
        # Every scheduler class this pipeline has run with: `set_scheduler` can always switch back to one of them
        # (a diffusers solver's `compatibles` do not name CompoDiffScheduler).
        self._scheduler_classes = {type(scheduler).__name__: type(scheduler)}
        self.default_guidance_scale = float(default_guidance_scale)
        self.default_image_guidance_scale = float(default_image_guidance_scale)
        self.default_num_inference_steps = int(default_num_inference_steps)
        self.default_num_samples_per_prompt = int(default_num_samples_per_prompt)
        self.text_encoding_cache: TextEncodingCache | None = None
        # Runs step 5 of `__call__` instead of the loop below when set and it accepts the call (returns the final
        # latents; None runs the loop): hf_cir.pipelines.compodiff.captured_sampling.CapturedSamplingLoop replays
        # it as one CUDA graph. Kept as a plain slot so that this file imports nothing of hf_cir (remote code).
        self.sampling_loop = None

    # ------------------------------------------------------------------------------------- speed and precision

    def enable_text_encoding_cache(self, max_entries: int = 256) -> TextEncodingCache:
        """
        Keep the text conditions of the last `max_entries` distinct texts (prompts and negative prompts) and reuse
        them instead of running the text encoder again: a repeated text (the same modification for many
        references, the empty negative prompt) costs nothing after its first use. Off by default. See
        [`TextEncodingCache`] for what invalidates it. Returns the cache (its `hits` and `misses` count lookups).
        """
        self.text_encoding_cache = TextEncodingCache(max_entries)
        return self.text_encoding_cache

    def disable_text_encoding_cache(self) -> None:
        self.text_encoding_cache = None

    def set_precision(self, precision: str, components: tuple[str, ...] = ("text_encoder", "prior")) -> None:
        """
        Run the text encoder and the prior (or the given `components`) in a lower precision.

        - `"float16"`, `"bfloat16"`: cast the weights (fast on GPUs, and on CPUs with bfloat16 matrix
          instructions; on CPUs without them, e.g. AVX2 only, bfloat16 is slower than float32).
        - `"int8"` (CPU only): dynamic int8 quantisation (`torch.ao.quantization.quantize_dynamic`) of the linear
          layers inside the components' repeated blocks (`nn.ModuleList`s: the transformer layers, where the
          weights are); their inputs are quantised per call, outputs stay float32; the outer layers stay as they
          are. The modules are changed in place, for inference only (do not save or train the pipeline after it).
        - `"float32"`: cast back (not possible after `"int8"`: reload the pipeline).

        The image encoder is never changed, so stored gallery embeddings stay valid. The text-encoding cache is
        emptied.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {PRECISIONS}, got {precision!r}.")
        unknown = [name for name in components if name not in ("text_encoder", "prior")]
        if unknown:
            raise ValueError(f"`components` may name 'text_encoder' and 'prior', got {unknown}.")
        for name in components:
            module = getattr(self, name)
            if module is None:
                continue
            quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules())
            if quantized:
                raise ValueError(f"The {name} is already int8-quantised: reload the pipeline to change its precision.")
            if precision == "int8":
                device = next(module.parameters()).device
                if device.type != "cpu":
                    raise ValueError(f"`precision='int8'` runs on the CPU only; the {name} is on {device}.")
                self._quantize_int8(module)
            else:
                module.to(getattr(torch, precision))
        if self.text_encoding_cache is not None:
            self.text_encoding_cache.clear()

    @staticmethod
    def _quantize_int8(module: torch.nn.Module) -> None:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        blocks = {
            name: default_dynamic_qconfig for name, m in module.named_modules() if isinstance(m, torch.nn.ModuleList)
        }
        if not blocks:
            raise ValueError(f"{type(module).__name__} has no repeated blocks (nn.ModuleList) to quantise.")
        with warnings.catch_warnings():
            # torch announces the move of eager-mode quantisation to torchao; the API works in this torch.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*torchao.*")
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            quantize_dynamic(module, blocks, dtype=torch.qint8, inplace=True)

    def set_sampling_defaults(
        self,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        num_samples_per_prompt: int | None = None,
    ) -> None:
        """
        Change what `__call__` uses for arguments left at None; `save_pretrained` then records them in
        `model_index.json`, so that every caller of the saved folder samples the same way. Arguments left at None
        keep their current value.
        """
        for name, value, low in (
            ("guidance_scale", guidance_scale, 0),
            ("image_guidance_scale", image_guidance_scale, 0),
            ("num_inference_steps", num_inference_steps, 1),
            ("num_samples_per_prompt", num_samples_per_prompt, 1),
        ):
            if value is None:
                continue
            integral = name.startswith("num_")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integral and value != int(value)):
                raise ValueError(f"`{name}` must be {'an integer' if integral else 'a number'}; got {value!r}.")
            if value < low:
                raise ValueError(f"`{name}` must be >= {low}; got {value!r}.")
            setattr(self, f"default_{name}", int(value) if integral else float(value))
            self.register_to_config(**{f"default_{name}": getattr(self, f"default_{name}")})

    def apply_preset(self, name: str) -> None:
        """
        Switch to a named sampling setting of [`SAMPLING_PRESETS`] in one line: its scheduler (made from this
        scheduler's config), its default `num_inference_steps` and `num_samples_per_prompt` (explicit call arguments
        still win), its precision for the text encoder and the prior, and a bounded text-encoding cache
        ([`~CompoDiffPipeline.enable_text_encoding_cache`], kept if one is on already) so that the texts every query
        shares, the negative prompt first of all, are encoded once.

        `"interactive"`: stochastic DPM-Solver++ (`algorithm_type="sde-dpmsolver++"`, order 2) with 6 steps (6 prior
        evaluations instead of 9) and 2 samples per prompt, int8 text encoder and prior on a CPU (float16 on an
        accelerator, not measured yet), and a 64-text encoding cache. On the toy benchmark its Recall@1/5/10,
        averaged over both seeds, are each within a point of the default 10-step float32 path, and a full-size query
        with a new modification text each time (bigG-sized text encoder + 140 M prior) ran 5.1x faster than the
        default path on an idle 2-vCPU AVX2 CPU (3.4x without the cache, which spares the negative prompt's encoder
        pass; benchmarks/bench_compodiff_quality.py, numbers in benchmarks/README.md). The guidance defaults stay
        the checkpoint's (`default_guidance_scale`, `default_image_guidance_scale`).
        """
        if name not in SAMPLING_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(SAMPLING_PRESETS)}.")
        preset = SAMPLING_PRESETS[name]
        self.set_scheduler(preset["scheduler"], **preset["scheduler_kwargs"])
        self.default_num_inference_steps = preset["num_inference_steps"]
        self.default_num_samples_per_prompt = preset["num_samples_per_prompt"]
        precision = preset["precision"]
        if precision == "auto":
            precision = "int8" if self._execution_device.type == "cpu" else "float16"
        self.set_precision(precision)
        if preset.get("text_encoding_cache") and self.text_encoding_cache is None:
            self.enable_text_encoding_cache(preset["text_encoding_cache"])

    def set_scheduler(self, name: str, **kwargs) -> None:
        """
        Replace the scheduler by the one named `name` (its class name), made with `from_config` of the current
        scheduler's config plus `kwargs`: the current class, one of `self.scheduler.compatibles`, or a class this
        pipeline ran with before (so `set_scheduler("CompoDiffScheduler")` undoes `apply_preset`'s solver, with the
        same settings: the round trip keeps the configuration).
        """
        known = getattr(self, "_scheduler_classes", {})
        classes = {**known, type(self.scheduler).__name__: type(self.scheduler)}
        classes.update({cls.__name__: cls for cls in self.scheduler.compatibles})
        if name not in classes:
            raise ValueError(f"Unknown or incompatible scheduler {name!r}; expected one of {sorted(classes)}.")
        target = classes[name]
        # Settings the new class does not take (CompoDiff's `cosine_s`, a solver's `algorithm_type`) ride along as
        # hidden config, as diffusers keeps them between its own compatible schedulers, so that switching back
        # restores them; passed to `from_config` they would only earn diffusers' "not expected" warning.
        accepted = set(inspect.signature(target.__init__).parameters)
        # Every value the current scheduler holds is its truth: diffusers' `_use_default_values` would otherwise give
        # a shared setting the *new* class's default (e.g. its own `beta_schedule`).
        config = {k: v for k, v in self.scheduler.config.items() if k != "_use_default_values"}
        foreign = {k: v for k, v in config.items() if not k.startswith("_") and k not in accepted and k not in kwargs}
        scheduler = target.from_config({k: v for k, v in config.items() if k not in foreign}, **kwargs)
        scheduler.register_to_config(**foreign)
        self._scheduler_classes = {**classes, type(self.scheduler).__name__: type(self.scheduler)}
        self.scheduler = scheduler

    # ------------------------------------------------------------------------------------------------ encoders

    def _encode_texts(self, texts: list[str], device: torch.device, argument: str = "prompt_embeds") -> torch.Tensor:
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(f"This pipeline has no `text_encoder`/`tokenizer`: pass `{argument}` instead.")
        cache = self.text_encoding_cache
        distinct = list(dict.fromkeys(texts))
        if _warn_unknown_words is not None:
            _warn_unknown_words(self.tokenizer, distinct, stacklevel=5)  # encode_prompt, __call__, no_grad, caller
        if cache is None or len(distinct) > cache.max_entries:  # no cache, or more texts than it holds
            return self._run_text_encoder(texts, device)
        cache.bind(self.text_encoder, self.tokenizer, device)
        missing = [text for text in distinct if text not in cache]
        cache.hits += len(texts) - len(missing)
        cache.misses += len(missing)
        if missing:
            # This call's hits first become the most recent: storing the new texts then drops only other entries.
            cache.touch([text for text in distinct if text in cache])
            cache.put(missing, self._run_text_encoder(missing, device))
        return cache.get(texts)

    def _run_text_encoder(self, texts: list[str], device: torch.device) -> torch.Tensor:
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        for text, ids in zip(texts, self.tokenizer(texts).input_ids):
            if len(ids) > max_length:
                warnings.warn(
                    f"A prompt has {len(ids)} tokens, more than the text encoder's {max_length}: it was truncated "
                    f"(the end-of-text token is kept): {text[:80]!r}",
                    stacklevel=4,
                )
        output = self.text_encoder(
            input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device)
        )
        return output.last_hidden_state

    def encode_prompt(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = "",
        device: torch.device | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Encode the prompts and the negative prompt into text conditions.

        Each text is tokenised on its own terms (padded to the tokenizer's maximum length, truncated with a
        warning) and encoded with its own attention mask; the condition is the text encoder's last hidden state
        over all positions. One negative prompt gives a batch of 1, shared by every prompt.

        Args:
            prompt (`str` or `list[str]`, *optional*): The modification texts; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*, defaults to `""`): One text, or one per prompt.
            device (`torch.device`, *optional*): Where to put the embeddings.
            prompt_embeds (`torch.Tensor` of shape `(batch, length, text_dim)`, *optional*): Precomputed.
            negative_prompt_embeds (`torch.Tensor` of shape `(1 or batch, length, text_dim)`, *optional*):
                Precomputed.

        Returns:
            `(prompt_embeds, negative_prompt_embeds)`.
        """
        device = device or self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("Pass `prompt` or `prompt_embeds`.")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
            prompt_embeds = self._encode_texts(prompts, device)
        batch = prompt_embeds.shape[0]
        if negative_prompt_embeds is None:
            negatives = [negative_prompt or ""] if isinstance(negative_prompt, str) or negative_prompt is None else []
            if not negatives:
                negatives = list(negative_prompt)
                if len(negatives) != batch or not all(isinstance(n, str) for n in negatives):
                    raise ValueError(
                        f"`negative_prompt` must be a string or a list of {batch} strings (one per prompt), got "
                        f"{negative_prompt!r}."
                    )
            negative_prompt_embeds = self._encode_texts(negatives, device, "negative_prompt_embeds")
        if (
            negative_prompt_embeds.shape[0] not in (1, batch)
            or negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]
        ):
            raise ValueError(
                f"`negative_prompt_embeds` has shape {tuple(negative_prompt_embeds.shape)}; expected (1 or {batch}, "
                f"{', '.join(map(str, prompt_embeds.shape[1:]))}) to match `prompt_embeds`."
            )
        prompt_embeds = prompt_embeds.to(device)
        negative_prompt_embeds = negative_prompt_embeds.to(device)
        return prompt_embeds, negative_prompt_embeds

    def _preprocess_images(self, image) -> tuple[torch.Tensor, list[PIL.Image.Image] | None]:
        """`(pixel_values, PIL images or None)` of a PIL image, a path, an array, a list of those, or pixel values."""
        if isinstance(image, torch.Tensor):
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(f"A tensor `image` must be pixel values (batch, 3, H, W), got {tuple(image.shape)}.")
            return image, None
        if self.image_processor is None:
            raise ValueError("This pipeline has no `image_processor`: pass pixel values or `image_embeds`.")
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        opened = []
        for index, item in enumerate(images):
            if _hf_cir_load_image is not None and isinstance(item, (str, os.PathLike, PIL.Image.Image, np.ndarray)):
                item = _hf_cir_load_image(item, name="image" if len(images) == 1 else f"image[{index}]")
            elif isinstance(item, (str, os.PathLike)):
                if not os.path.isfile(item):
                    raise FileNotFoundError(f"`image`: no such file: {item}")
                try:
                    item = load_image(str(item))  # diffusers' own loader: EXIF orientation applied, RGB
                except PIL.Image.DecompressionBombError as error:
                    raise ValueError(
                        f"`image`: {item} is refused as a possible decompression bomb ({error})."
                    ) from error
                except (PIL.UnidentifiedImageError, OSError, ValueError) as error:
                    raise ValueError(f"`image`: {item} is not a readable image ({error}).") from error
            elif isinstance(item, np.ndarray):
                item = PIL.Image.fromarray(item)
            elif not isinstance(item, PIL.Image.Image):
                raise TypeError(
                    f"`image` must be PIL images, paths, arrays or pixel values, got {type(item).__name__}."
                )
            opened.append(item)
        pixel_values = self.image_processor(images=opened, return_tensors="pt").pixel_values
        return pixel_values, opened

    @torch.no_grad()
    def encode_image(self, image, device: torch.device | None = None) -> torch.Tensor:
        """
        CLIP image embeddings `[batch, embedding_dim]` (the image encoder's `image_embeds`, not normalised): the
        image condition of a query, and the gallery embeddings to search.

        Args:
            image: A PIL image, a path, a uint8 array, a list of those, or preprocessed pixel values.

        Example:

        ```python
        >>> gallery = pipe.encode_image(["a.jpg", "b.jpg"])  # doctest: +SKIP
        ```
        """
        if self.image_encoder is None:
            raise ValueError("This pipeline has no `image_encoder`: pass `image_embeds` instead.")
        device = device or self._execution_device
        pixel_values, _ = self._preprocess_images(image)
        return self._encode_pixels(pixel_values, device)

    def _encode_pixels(self, pixel_values: torch.Tensor, device: torch.device) -> torch.Tensor:
        pixel_values = pixel_values.to(device=device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixel_values=pixel_values).image_embeds

    # ----------------------------------------------------------------------------------------------------- masks

    def _prepare_mask(self, mask_image, batch: int, images, pixel_size) -> tuple[torch.Tensor | None, torch.Tensor]:
        """
        `(mask at the pixel grid or None, mask at the prior's side)`, both binary, 1 = masked, as the reference
        demo: binarise at 0.5 on the preprocessed grid, zero the masked pixels, resize to the prior's side, binarise.
        """
        side = self.prior.config.mask_size
        if isinstance(mask_image, (PIL.Image.Image, list, tuple)):
            masks = list(mask_image) if isinstance(mask_image, (list, tuple)) else [mask_image]
            if len(masks) not in (1, batch):
                raise ValueError(f"`mask_image` has {len(masks)} masks for {batch} prompts.")
            if images is not None and len(masks) == 1 and len(images) > 1:
                masks = masks * len(images)
            if images is not None:
                for index, mask in enumerate(masks):
                    if isinstance(mask, PIL.Image.Image) and mask.size != images[index].size:
                        raise ValueError(
                            f"`mask_image` has size {mask.size} but its image has size {images[index].size}; they "
                            "must match (width, height)."
                        )
            if self.image_processor is None:
                raise ValueError("This pipeline has no `image_processor` to preprocess a PIL `mask_image`.")
            pixel_mask, prior_mask = preprocess_mask(masks, self.image_processor, side)
            if pixel_mask.shape[0] not in (1, batch):
                raise ValueError(f"`mask_image` has batch {pixel_mask.shape[0]} for {batch} prompts.")
            return pixel_mask.expand(batch, -1, -1, -1), prior_mask.expand(batch, -1, -1)
        else:
            if isinstance(mask_image, np.ndarray):
                mask_image = torch.from_numpy(np.asarray(mask_image, dtype=np.float32))
            if not isinstance(mask_image, torch.Tensor):
                raise TypeError(
                    f"`mask_image` must be a PIL image, an array or a tensor, got {type(mask_image).__name__}."
                )
            grid = mask_image.float()
            if grid.ndim == 2:
                grid = grid[None]
            if grid.ndim == 4:
                if grid.shape[1] != 1:
                    raise ValueError(
                        f"`mask_image` must have a single channel, got shape {tuple(mask_image.shape)} "
                        f"({grid.shape[1]} channels)."
                    )
                grid = grid[:, 0]
            if grid.ndim != 3:
                raise ValueError(
                    f"`mask_image` tensor must be (H, W), (batch, H, W) or (batch, 1, H, W), got {tuple(mask_image.shape)}."
                )
            grid = grid[:, None]
            allowed = [(side, side)] + ([tuple(pixel_size)] if pixel_size is not None else [])
            if tuple(grid.shape[-2:]) not in allowed:
                raise ValueError(
                    f"`mask_image` has size {tuple(grid.shape[-2:])}; a tensor mask must be at the prior's mask side "
                    f"{(side, side)}"
                    + (f" or the preprocessed image size {tuple(pixel_size)}" if pixel_size else "")
                    + " (or pass a PIL mask the size of the image)."
                )
        if grid.shape[0] not in (1, batch):
            raise ValueError(f"`mask_image` has batch {grid.shape[0]} for {batch} prompts.")
        grid = grid.expand(batch, -1, -1, -1)
        if tuple(grid.shape[-2:]) == (side, side):
            prior_mask = (grid > 0.5).float()
            pixel_mask = F.interpolate(prior_mask, size=tuple(pixel_size), mode="nearest") if pixel_size else None
            return pixel_mask, prior_mask[:, 0]
        return binarize_mask(grid, side)

    # ---------------------------------------------------------------------------------------------------- checks

    def check_inputs(
        self,
        prompt,
        image,
        num_inference_steps,
        guidance_scale,
        image_guidance_scale,
        num_samples_per_prompt,
        source_weight,
        prompt_embeds,
        image_embeds,
        output_type,
        num_images_per_prompt=1,
        callback_on_step_end_tensor_inputs=None,
        mask_image=None,
    ):
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` and `prompt_embeds`.")
        if image is not None and image_embeds is not None:
            raise ValueError("Pass at most one of `image` and `image_embeds`.")
        for name, value in [("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise ValueError(f"`num_inference_steps` must be an integer, got {num_inference_steps!r}.")
        total = getattr(self.scheduler.config, "num_train_timesteps", None)
        if num_inference_steps < 1 or (total is not None and num_inference_steps > total):
            raise ValueError(
                f"`num_inference_steps` must be between 1 and the scheduler's training timesteps ({total}), got "
                f"{num_inference_steps}."
            )
        if (
            isinstance(num_samples_per_prompt, bool)
            or not isinstance(num_samples_per_prompt, int)
            or num_samples_per_prompt < 1
        ):
            raise ValueError(f"`num_samples_per_prompt` must be a positive integer, got {num_samples_per_prompt!r}.")
        if (
            isinstance(num_images_per_prompt, bool)
            or not isinstance(num_images_per_prompt, int)
            or num_images_per_prompt < 1
        ):
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has {unknown}; the callback can receive "
                f"{self._callback_tensor_inputs}."
            )
        if not isinstance(source_weight, (int, float)) or not np.isfinite(source_weight):
            raise ValueError(f"`source_weight` must be a finite number, got {source_weight!r}.")
        if source_weight != 0 and image is None and image_embeds is None:
            raise ValueError(
                "`source_weight` mixes in the reference image embedding: it needs `image` or `image_embeds`."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if mask_image is not None:
            self._check_mask_values(mask_image)

    @staticmethod
    def _check_mask_values(mask_image) -> None:
        """A tensor or array mask: real, finite, 2 to 4 dimensions, values in [0, 1] (1 = masked). PIL masks are
        checked for mode and size where they are preprocessed; a tensor mask's size where it is resized."""
        if isinstance(mask_image, (PIL.Image.Image, list, tuple)):
            return
        if isinstance(mask_image, np.ndarray):
            if not (np.issubdtype(mask_image.dtype, np.number) or mask_image.dtype == np.bool_) or np.issubdtype(
                mask_image.dtype, np.complexfloating
            ):
                raise ValueError(f"`mask_image` must hold real numbers in [0, 1], got dtype {mask_image.dtype}.")
            mask_image = torch.from_numpy(np.asarray(mask_image, dtype=np.float32))
        if not isinstance(mask_image, torch.Tensor):
            raise ValueError(
                f"`mask_image` must be a PIL image, a list of them, an array or a tensor, got {type(mask_image).__name__}."
            )
        if mask_image.is_complex():
            raise ValueError(f"`mask_image` must hold real numbers in [0, 1], got dtype {mask_image.dtype}.")
        if mask_image.ndim not in (2, 3, 4) or mask_image.numel() == 0:
            raise ValueError(
                "`mask_image` tensor must be (H, W), (batch, H, W) or (batch, 1, H, W) and not empty, got shape "
                f"{tuple(mask_image.shape)}."
            )
        values = mask_image.detach().float()
        if not bool(torch.isfinite(values).all()):
            raise ValueError("`mask_image` holds non-finite values (NaN or infinity); a mask is 0 or 1 (1 = masked).")
        low, high = values.min().item(), values.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f"`mask_image` values must lie in [0, 1] (1 = masked, binarised at 0.5), got [{low:g}, {high:g}]; "
                "divide a 0-255 mask by 255."
            )

    # ------------------------------------------------------------------------------------------------- sampling

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def image_guidance_scale(self) -> float:
        return self._image_guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def prepare_latents(
        self,
        shape: tuple[int, int],
        num_groups: int,
        generator,
        latents: torch.Tensor | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """
        The initial noise `(num_groups * samples, embedding_dim)`: `latents` if given (checked), else drawn. With a
        list of generators (one per group, i.e. per returned embedding) each group's rows come from its own
        generator, so a query's result does not depend on the other queries of the batch.
        """
        if latents is None:
            latents = self.randn_groups(shape, num_groups, generator, device, dtype)
        elif tuple(latents.shape) != tuple(shape):
            raise ValueError(
                f"`latents` has shape {tuple(latents.shape)}; expected {tuple(shape)} (prompts x num_images_per_prompt"
                " x num_samples_per_prompt rows of the embedding size)."
            )
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    @staticmethod
    def randn_groups(shape, num_groups: int, generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Gaussian noise of `shape`; a list of `num_groups` generators draws each group's consecutive rows."""
        if not isinstance(generator, list):
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        rows = (shape[0] // num_groups, *shape[1:])
        return torch.cat([randn_tensor(rows, generator=g, device=device, dtype=dtype) for g in generator])

    def predict_guided_sample(
        self, model_input: torch.Tensor, timestep: torch.Tensor, conditions: dict, num_branches: int
    ) -> torch.Tensor:
        """
        One step's model work: the prior's clean-sample prediction for `model_input` `(rows, embedding_dim)` in each
        guidance branch (`conditions` are the prior's keyword arguments for `num_branches * rows` rows, branches
        stacked), combined with `self.guidance_scale` and `self.image_guidance_scale` (two branches: `null_text`
        serves as `null_all`). `timestep` is the prior's timestep tensor.
        """
        predicted = self.prior(model_input.repeat(num_branches, 1), timestep, **conditions).predicted_image_embedding
        if num_branches == 3:
            cond_pred, null_text_pred, null_all_pred = predicted.chunk(3)
        else:
            cond_pred, null_text_pred = predicted.chunk(2)
            null_all_pred = null_text_pred
        return (
            null_all_pred
            + (cond_pred - null_text_pred) * self._guidance_scale
            + (null_text_pred - null_all_pred) * self._image_guidance_scale
        )

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        negative_prompt: str | list[str] | None = "",
        mask_image=None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        num_samples_per_prompt: int | None = None,
        num_images_per_prompt: int = 1,
        source_weight: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> CompoDiffPipelineOutput | tuple:
        """
        Compose a query embedding from a reference image, a modification text and an optional mask.

        Args:
            prompt (`str` or `list[str]`): The modification text(s); one query per prompt.
            image (PIL image, path, array, list of those, or pixel values `(batch, 3, H, W)`, *optional*):
                The reference image(s), one per prompt. Without `image` and `image_embeds` the pipeline maps text to
                an image embedding (zero image condition).
            negative_prompt (`str` or `list[str]`, *optional*, defaults to `""`): Guides away from this text.
            mask_image (*optional*): 1 (white) marks the region the text may change. A single-channel PIL image
                the size of `image` (or a list, one per image) is preprocessed like the image, binarised at 0.5, and
                its region is zeroed in the preprocessed image before encoding; it is then resized to the prior's
                mask side and binarised again. A tensor/array `(H, W)`, `(batch, H, W)` or `(batch, 1, H, W)` at the
                prior's mask side is used as is (binarised), and one at the preprocessed image size is treated like
                a preprocessed PIL mask. Without a mask the mask condition is zero.
            num_inference_steps (`int`, *optional*, defaults to `pipe.default_num_inference_steps`, 10): With
                [`CompoDiffScheduler`], the reference's `timesteps` argument (10 gives 9 prior evaluations); with a
                diffusers scheduler, its number of steps (prior evaluations for a first-order or multistep solver).
            guidance_scale (`float`, *optional*, defaults to `pipe.default_guidance_scale`): Text guidance, >= 0.
                The default is the checkpoint's (`default_guidance_scale` in `model_index.json`; the reference's
                7.5 when the folder does not set it).
            image_guidance_scale (`float`, *optional*, defaults to `pipe.default_image_guidance_scale`): Image
                guidance, >= 0 (the checkpoint's `default_image_guidance_scale`; 1.5 when not set).
            num_samples_per_prompt (`int`, *optional*, defaults to `pipe.default_num_samples_per_prompt`, 2):
                Diffusion samples averaged into each returned
                embedding (the reference's `num_samples`: averaging is what makes a CompoDiff query stable).
            num_images_per_prompt (`int`, *optional*, defaults to 1): Returned embeddings per prompt (diffusers'
                meaning), each the average of its own `num_samples_per_prompt` samples; rows are ordered prompt by
                prompt, `prompt_index * num_images_per_prompt + image_index`.
            source_weight (`float`, *optional*, defaults to 0.0): Returns `(1 - w) * out + w * image_embeds`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): Makes sampling deterministic.
                One generator draws the initial noise and each step's noise in order (the reference's order). A
                list needs one generator per returned embedding (`len(prompts) * num_images_per_prompt`); each
                draws the noise of that embedding's samples, so an embedding does not depend on the rest of the
                batch.
            latents (`torch.Tensor` of shape `(batch * num_images_per_prompt * num_samples_per_prompt,
                embedding_dim)`, *optional*): The initial noise of every sample (rows grouped by returned
                embedding), instead of drawing it.
            prompt_embeds (`torch.Tensor` of shape `(batch, length, text_dim)`, *optional*): Precomputed text
                conditions (the text encoder's last hidden state); skips the text encoder.
            negative_prompt_embeds (`torch.Tensor` of shape `(1 or batch, length, text_dim)`, *optional*).
            image_embeds (`torch.Tensor` of shape `(batch, embedding_dim)`, *optional*): Precomputed image
                conditions; skips the image encoder.
            output_type (`str`, *optional*, defaults to `"pt"`): `"pt"` (the query embeddings as torch tensors),
                `"np"` (the same as numpy arrays) or `"latent"` (the prior's raw samples as torch tensors, one row
                per sample, before averaging and `source_weight`: what the denoising loop and callbacks see).
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`CompoDiffPipelineOutput`], else a tuple.
            callback_on_step_end (`Callable`, [`~diffusers.callbacks.PipelineCallback`] or
                [`~diffusers.callbacks.MultiPipelineCallbacks`], *optional*): Called after every denoising step as
                `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`; it returns a dict whose
                `latents` (the current samples) replace the pipeline's. `pipe.guidance_scale` and
                `pipe.image_guidance_scale` may be changed from it.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): The tensors put into `callback_kwargs`,
                from `pipe._callback_tensor_inputs` (`["latents"]`).

        Examples:

        Returns:
            [`CompoDiffPipelineOutput`] or `(image_embeds,)`: `(batch * num_images_per_prompt, embedding_dim)`, not
            normalised.
        """
        # 1. Check inputs.
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        if num_samples_per_prompt is None:
            num_samples_per_prompt = self.default_num_samples_per_prompt
        if guidance_scale is None:
            guidance_scale = self.default_guidance_scale
        if image_guidance_scale is None:
            image_guidance_scale = self.default_image_guidance_scale
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        self.check_inputs(
            prompt,
            image,
            num_inference_steps,
            guidance_scale,
            image_guidance_scale,
            num_samples_per_prompt,
            source_weight,
            prompt_embeds,
            image_embeds,
            output_type,
            num_images_per_prompt,
            callback_on_step_end_tensor_inputs,
            mask_image,
        )
        self._guidance_scale = guidance_scale
        self._image_guidance_scale = image_guidance_scale
        self._interrupt = False
        device = self._execution_device
        dtype = self.prior.dtype
        embedding_dim = self.prior.config.embedding_dim
        batch = (
            prompt_embeds.shape[0] if prompt_embeds is not None else (1 if isinstance(prompt, str) else len(prompt))
        )
        if image is not None:
            image_batch = (
                image.shape[0]
                if isinstance(image, torch.Tensor)
                else (len(image) if isinstance(image, (list, tuple)) else 1)
            )
            if image_batch != batch:
                raise ValueError(f"Got {batch} prompt(s) but {image_batch} image(s): pass one image per prompt.")
        if image_embeds is not None and (image_embeds.ndim != 2 or image_embeds.shape != (batch, embedding_dim)):
            raise ValueError(
                f"`image_embeds` must have shape ({batch}, {embedding_dim}) (one per prompt), got "
                f"{tuple(image_embeds.shape)}."
            )
        num_queries = batch * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != num_queries:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators, but the call returns {num_queries} embeddings "
                f"({batch} prompt(s) x num_images_per_prompt={num_images_per_prompt}): pass one generator per "
                "returned embedding, or a single generator."
            )

        # 2. Encode the texts, the mask and the image.
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, negative_prompt, device, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds
        )
        pixel_values = images = None
        if image is not None:
            if self.image_encoder is None:
                raise ValueError("This pipeline has no `image_encoder`: pass `image_embeds` instead of `image`.")
            pixel_values, images = self._preprocess_images(image)
        if mask_image is not None and image is None and image_embeds is None:
            raise ValueError(
                "`mask_image` needs a reference image (`image` or `image_embeds`): the mask marks the region of the "
                "reference image to change, and a text-only query has none."
            )
        for name, value in (("image", pixel_values), ("image_embeds", image_embeds)):
            if value is not None and not bool(torch.isfinite(value).all()):
                raise ValueError(f"`{name}` holds non-finite values (NaN or infinity).")
        mask = None
        if mask_image is not None:
            pixel_size = tuple(pixel_values.shape[-2:]) if pixel_values is not None else self._processor_size()
            pixel_mask, mask = self._prepare_mask(mask_image, batch, images, pixel_size)
            if pixel_values is not None:
                pixel_values = pixel_values * (1 - pixel_mask.to(pixel_values.dtype))
        if pixel_values is not None:
            image_embeds = self._encode_pixels(pixel_values, device)
        text_only = image_embeds is None
        zeros = torch.zeros(batch, embedding_dim, device=device, dtype=dtype)
        image_embeds = zeros if text_only else image_embeds.to(device=device, dtype=dtype)
        mask = (
            torch.zeros(batch, self.prior.config.mask_size, self.prior.config.mask_size, device=device, dtype=dtype)
            if mask is None
            else mask.to(device=device, dtype=dtype)
        )
        prompt_embeds = prompt_embeds.to(dtype)
        negative_prompt_embeds = negative_prompt_embeds.to(dtype)
        if num_images_per_prompt > 1:  # one query per returned embedding, ordered prompt by prompt
            image_embeds = image_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            mask = mask.repeat_interleave(num_images_per_prompt, dim=0)
            zeros = torch.zeros_like(image_embeds)
            prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            if negative_prompt_embeds.shape[0] > 1:
                negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            batch = num_queries

        # 3. Timesteps and initial noise: rows ordered (query, sample), row b * R + r.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        samples = num_samples_per_prompt
        shape = (batch * samples, embedding_dim)
        latents = self.prepare_latents(shape, batch, generator, latents, device, dtype)
        step_parameters = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {}
        if "generator" in step_parameters:
            # A list of generators, one per query: each row's noise comes from its query's generator.
            step_kwargs["generator"] = (
                [g for g in generator for _ in range(samples)] if isinstance(generator, list) else generator
            )
        # With a list, a scheduler that takes `variance_noise` gets each query's step noise drawn in one piece from
        # its generator, exactly as a single generator draws it for a batch of one.
        noise_per_query = isinstance(generator, list) and "variance_noise" in step_parameters

        # 4. The conditions of the guidance branches (cond, null_text, null_all).
        if self.use_context_cache:
            cond = self.prior.prepare_context(prompt_embeds, image_embeds, mask)
            if text_only:  # null_text and null_all have identical inputs: one branch serves both
                null = self.prior.prepare_context(negative_prompt_embeds, zeros, mask)
            else:  # the negative prompt is projected once for both of its branches
                null = self.prior.prepare_context(
                    negative_prompt_embeds, torch.cat([image_embeds, zeros]), torch.cat([mask, mask])
                )
            context = type(cond).cat([cond, null])
            num_branches = 2 if text_only else 3
            conditions = {"context_cache": context}
        else:
            num_branches = 3

            def per_sample(tensor):
                return tensor.expand(batch, *tensor.shape[1:]).repeat_interleave(samples, dim=0)

            image_rows, mask_rows = per_sample(image_embeds), per_sample(mask)
            text_rows, negative_rows = per_sample(prompt_embeds), per_sample(negative_prompt_embeds)
            conditions = {
                "image_embeds": torch.cat([image_rows, image_rows, torch.zeros_like(image_rows)]),
                "text_hidden_states": torch.cat([text_rows, negative_rows, negative_rows]),
                "mask": torch.cat([mask_rows, mask_rows, mask_rows]),
            }

        # 5. Denoise (or replay the captured loop: `pipe.sampling_loop`; callbacks need the loop below).
        captured = None
        if self.sampling_loop is not None and callback_on_step_end is None:
            captured = self.sampling_loop(
                self, latents, conditions, num_branches, num_inference_steps, generator, batch
            )
        for i, t in enumerate(self.progress_bar(timesteps if captured is None else [])):
            if self.interrupt:
                continue
            model_input = self.scheduler.scale_model_input(latents, t)
            if self.use_context_cache:  # one timestep for every row: embedded once
                timestep = torch.tensor([int(t)], device=device, dtype=torch.long)
            else:  # as the reference: one per row
                timestep = torch.full((num_branches * latents.shape[0],), int(t), device=device, dtype=torch.long)
            guided = self.predict_guided_sample(model_input, timestep, conditions, num_branches)
            if noise_per_query:
                step_kwargs["variance_noise"] = self.randn_groups(latents.shape, batch, generator, device, dtype)
            latents = self.scheduler.step(guided, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                tensors = {"latents": latents}  # the names in `_callback_tensor_inputs`
                callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
        if captured is not None:
            latents = captured

        # 6. Average the samples of each query; optionally mix in the reference image embedding. `"latent"` returns
        # the raw samples instead (diffusers' pipelines return their latents before decoding the same way).
        if output_type == "latent":
            output = latents
        else:
            output = latents.view(batch, samples, embedding_dim).mean(dim=1)
            if source_weight != 0:
                output = (1 - source_weight) * output + source_weight * image_embeds

        self.maybe_free_model_hooks()
        if output_type == "np":
            output = output.float().cpu().numpy()
        if not return_dict:
            return (output,)
        return CompoDiffPipelineOutput(image_embeds=output)

    # ------------------------------------------------------------------------------------------ saving, loading

    def save_pretrained(self, save_directory: str | os.PathLike, *args, push_to_hub: bool = False, **kwargs):
        """
        [`~diffusers.DiffusionPipeline.save_pretrained`], then [`add_remote_code`]: the folder carries this file and
        the prior's and scheduler's module files, so it loads both with `CompoDiffPipeline.from_pretrained(folder)`
        (the installed classes) and with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`
        (anywhere, without hf-cir). `push_to_hub=True` uploads the finished folder with `push_to_hub`'s keywords.
        """
        push_keys = ("repo_id", "commit_message", "private", "token", "create_pr")
        push_kwargs = {k: kwargs.pop(k) for k in push_keys if k in kwargs}
        super().save_pretrained(save_directory, *args, push_to_hub=False, **kwargs)
        classes = {"_class_name": type(self)}
        for name, component in self.components.items():
            if component is not None and type(component).__module__.split(".")[0] not in PEER_LIBRARIES:
                classes[name] = type(component)
        add_remote_code(save_directory, classes)
        if push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = push_kwargs.pop("repo_id", Path(save_directory).name)
            token = push_kwargs.get("token")
            repo_id = create_repo(repo_id, exist_ok=True, private=push_kwargs.get("private"), token=token).repo_id
            upload_folder(
                repo_id=repo_id,
                folder_path=save_directory,
                commit_message=push_kwargs.get("commit_message"),
                token=token,
                create_pr=push_kwargs.get("create_pr", False),
            )

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """
        [`~diffusers.ConfigMixin.load_config`]; for a folder in the remote-code layout whose classes this class's
        own package provides (recorded under `_package_modules` by [`add_remote_code`]), the entries point at those
        installed modules, so `from_pretrained` builds the installed classes and never runs the folder's code
        copies. `DiffusionPipeline.from_pretrained` does not come here and loads the copies (`trust_remote_code`).
        """
        result = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        modules = config.get(PACKAGE_MODULES_KEY) or {}
        package = cls.__module__.split(".")[0]
        if modules and all(_is_package_module(module, package) for module in modules.values()):
            for name, module in modules.items():
                if name == "_class_name":
                    config[name] = config[name][1] if isinstance(config[name], list) else config[name]
                else:
                    importlib.import_module(module)  # diffusers only resolves third-party classes already imported
                    config[name] = [module, config[name][1]]
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        [`~diffusers.DiffusionPipeline.from_pretrained`]. A Hub repository id is first fetched whole with
        `huggingface_hub.snapshot_download`, so that a remote-code repository loads through [`load_config`] with
        the installed classes too (diffusers' own download would ask to run the repository's pipeline file).
        """
        if cls is not DiffusionPipeline and not os.path.isdir(pretrained_model_name_or_path):
            from huggingface_hub import snapshot_download

            download_keys = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")
            pretrained_model_name_or_path = snapshot_download(
                pretrained_model_name_or_path, **{k: kwargs.pop(k) for k in download_keys if k in kwargs}
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def _processor_size(self) -> tuple[int, int] | None:
        crop = getattr(self.image_processor, "crop_size", None) if self.image_processor is not None else None
        if isinstance(crop, dict) and "height" in crop:
            return (crop["height"], crop["width"])
        if crop is not None and hasattr(crop, "height"):
            return (crop.height, crop.width)
        return None

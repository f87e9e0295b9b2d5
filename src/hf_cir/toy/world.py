"""A procedural world of small images for composed image retrieval that a CPU can learn in minutes.

Every image holds one object described by five attributes (shape, color, size, position, background), so
the meaning of a caption, of a modification text and of a composed query is known exactly: the target of
"make it blue" applied to a small red circle on the left is the small blue circle on the left with the same
background. The retrieval problem stays non-trivial because every gallery holds the target's hard negatives,
the images that share all but one attribute with it (the reference among them).

Everything is a pure function of a seed: the held-out attribute combinations, the rendering of each image
(position, size and rotation jitter, color noise, texture phase), the caption templates and the queries.
Images are never flipped: a horizontal flip would swap the "left" and "right" labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ATTRIBUTES",
    "NUM_NEIGHBOURS",
    "ToyAttributes",
    "ToyQuery",
    "ToyTriplet",
    "ToyWorld",
    "toy_keyword_spans",
    "toy_vocabulary",
]

# The attribute values, in a fixed order (their indices feed the per-image seeds).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "diamond", "cross", "star"),
    "color": ("red", "orange", "yellow", "green", "blue", "purple", "white", "black"),
    "size": ("small", "large"),
    "position": ("left", "right", "top", "bottom", "center"),
    "background": ("plain", "striped", "dotted", "checkered"),
}

_RGB = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 225),
    "purple": (140, 55, 190),
    "white": (245, 245, 245),
    "black": (18, 18, 18),
}
# How many combinations differ from a given one in exactly one attribute (20 with the values above).
NUM_NEIGHBOURS = sum(len(values) - 1 for values in ATTRIBUTES.values())

# Object centre (x, y) as a fraction of the image side, and radius as a fraction of the side.
_CENTRES = {"left": (0.31, 0.5), "right": (0.69, 0.5), "top": (0.5, 0.31), "bottom": (0.5, 0.69), "center": (0.5, 0.5)}
_RADII = {"small": 0.16, "large": 0.27}
# How each position reads inside a caption ("a red circle on the left").
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}

# Caption templates: slots {size} {color} {shape} {position} {background}; `{a}` is the article before the
# word that follows it ("a" or "an"). "that is" / "which is" phrasings are there on purpose: LinCIR's query
# template is "a photo of $ that {modification}".
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{a} {size} {color} {shape} {position} on a {background} background",
    "a photo of {a} {size} {color} {shape} {position} on a {background} background",
    "{a} {color} {shape} which is {size} and placed {position} on a {background} background",
    "a {background} background with {a} {size} {color} {shape} {position}",
    "there is {a} {size} {color} {shape} {position} on a {background} background",
    "{position} there is {a} {size} {color} {shape} on a {background} background",
    "{a} {shape} that is {color} and {size} {position} on a {background} background",
    "an image of {a} {size} {color} {shape} {position} with a {background} background",
    "a picture of {a} {color} {shape} which is {size} {position} on a {background} background",
    "{size} {color} {shape} {position} {background} background",
    "{a} {size} {shape} in {color} {position} on a {background} background",
    "the {shape} is {color} and {size} and it sits {position} on a {background} background",
    "a {background} background and {a} {color} {shape} that is {size} {position}",
    "a photo of {a} {size} {shape} colored {color} {position} on a {background} background",
)

# Modification templates per attribute; {value} is the new value (a position phrase for positions).
MODIFICATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "shape": ("make it {a} {value}", "as {a} {value}", "change it to {a} {value}", "turn it into {a} {value}"),
    "color": ("make it {value}", "change the color to {value}", "turn it {value}", "in {value} instead"),
    "size": ("make it {value}", "change the size to {value}", "make the object {value}"),
    "position": ("move it to the {value}", "put it {phrase}", "place it {phrase}", "shift it to the {value}"),
    "background": (
        "on a {value} background",
        "change the background to {value}",
        "with a {value} background instead",
        "make the background {value}",
    ),
}
# Size changes also have comparative phrasings.
_SIZE_COMPARATIVES = {"small": "make it smaller", "large": "make it bigger"}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


_ARTICLE = re.compile(r"\b(an?) (\w+)")


def _fix_articles(text: str) -> str:
    """Make every "a"/"an" agree with the word after it ("a orange" -> "an orange")."""
    return _ARTICLE.sub(lambda m: f"{_article(m.group(2))} {m.group(2)}", text)


@dataclasses.dataclass(frozen=True, order=True)
class ToyAttributes:
    """The five attributes of a toy image's single object.

    Example:

    ```python
    >>> from hf_cir.toy import ToyAttributes
    >>> attributes = ToyAttributes("circle", "red", "small", "left", "plain")
    >>> attributes.replace(color="blue").color
    'blue'
    >>> len(attributes.neighbours())
    20
    ```
    """

    shape: str
    color: str
    size: str
    position: str
    background: str

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            value = getattr(self, name)
            if value not in values:
                raise ValueError(f"`{name}` must be one of {', '.join(values)}; got {value!r}.")

    def replace(self, **changes: str) -> ToyAttributes:
        """A copy with some attributes changed (`ValueError` on an unknown attribute or value)."""
        unknown = set(changes) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"Unknown attribute(s) {sorted(unknown)}; expected some of {list(ATTRIBUTES)}.")
        return dataclasses.replace(self, **changes)

    @property
    def index(self) -> int:
        """The position of this combination in `ToyWorld.combinations` (mixed-radix over `ATTRIBUTES`)."""
        index = 0
        for name, values in ATTRIBUTES.items():
            index = index * len(values) + values.index(getattr(self, name))
        return index

    def neighbours(self) -> list[ToyAttributes]:
        """Every combination that differs from this one in exactly one attribute (the hard negatives)."""
        return [
            self.replace(**{name: value})
            for name, values in ATTRIBUTES.items()
            for value in values
            if value != getattr(self, name)
        ]

    def differences(self, other: ToyAttributes) -> list[str]:
        """Names of the attributes in which `other` differs from this combination."""
        return [name for name in ATTRIBUTES if getattr(self, name) != getattr(other, name)]

    def describe(self) -> str:
        """A short canonical caption, e.g. "a small red circle on the left on a plain background"."""
        return _fix_articles(CAPTION_TEMPLATES[0].format(**_slots(self)))


def _slots(attributes: ToyAttributes) -> dict[str, str]:
    return {
        "a": "a",  # made to agree with the next word by `_fix_articles`
        "size": attributes.size,
        "color": attributes.color,
        "shape": attributes.shape,
        "position": _POSITION_PHRASES[attributes.position],
        "background": attributes.background,
    }


@dataclasses.dataclass(frozen=True)
class ToyTriplet:
    """A composed-retrieval example: `reference` + `text` describes `target`; `changed` names the attributes."""

    reference: ToyAttributes
    text: str
    target: ToyAttributes
    changed: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ToyQuery:
    """A benchmark query: a triplet with its own gallery of combinations (the target is `gallery[target_index]`).

    The gallery holds the target, all its one-attribute neighbours (the reference among them when one
    attribute changes), the reference, and random other combinations; each combination appears once.
    `variant` selects the rendering of the query's images (see `ToyWorld.render`).
    """

    triplet: ToyTriplet
    gallery: tuple[ToyAttributes, ...]
    target_index: int
    variant: int


def toy_vocabulary() -> list[str]:
    """Every word used by captions, modification texts and the LinCIR query template, sorted, plus `$`."""
    words: set[str] = {"$", "a", "an", "photo", "of", "that", "and"}
    for template in CAPTION_TEMPLATES + tuple(t for ts in MODIFICATION_TEMPLATES.values() for t in ts):
        words.update(w for w in template.split() if not w.startswith("{"))
    for phrase in list(_POSITION_PHRASES.values()) + list(_SIZE_COMPARATIVES.values()):
        words.update(phrase.split())
    for values in ATTRIBUTES.values():
        words.update(values)
    return sorted(words)


def _seed_from(*parts) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ToyWorld:
    """The toy world: its attribute combinations, a held-out split, rendering, captions and CIR queries.

    Args:
        seed (`int`, *optional*, defaults to 0):
            Fixes the held-out combinations and the rendering of every image. Models trained on a world are
            evaluated on the same world seed; benchmark seeds only change which queries are drawn.
        held_out_fraction (`float`, *optional*, defaults to 0.1):
            Fraction of the attribute combinations never used for training (images, captions or triplets).
        image_size (`int`, *optional*, defaults to 32):
            Side of the rendered square images, in pixels.

    Example:

    ```python
    >>> from hf_cir.toy import ToyWorld
    >>> world = ToyWorld(seed=0)
    >>> len(world.combinations), len(world.held_out_combinations)
    (1920, 192)
    >>> world.render(world.combinations[0]).size
    (32, 32)
    ```
    """

    def __init__(self, seed: int = 0, held_out_fraction: float = 0.1, image_size: int = 32):
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"`held_out_fraction` must be in (0, 1); got {held_out_fraction}.")
        if image_size < 16:
            raise ValueError(f"`image_size` must be at least 16 pixels; got {image_size}.")
        self.seed = seed
        self.held_out_fraction = held_out_fraction
        self.image_size = image_size
        self.combinations: list[ToyAttributes] = [
            ToyAttributes(*values) for values in itertools.product(*ATTRIBUTES.values())
        ]
        rng = np.random.default_rng(_seed_from("split", seed))
        num_held_out = max(1, round(held_out_fraction * len(self.combinations)))
        held_out = set(rng.permutation(len(self.combinations))[:num_held_out].tolist())
        self.held_out_combinations = [c for i, c in enumerate(self.combinations) if i in held_out]
        self.train_combinations = [c for i, c in enumerate(self.combinations) if i not in held_out]
        self._held_out_set = frozenset(self.held_out_combinations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, held_out_fraction={self.held_out_fraction}, image_size={self.image_size})"

    def is_held_out(self, attributes: ToyAttributes) -> bool:
        return attributes in self._held_out_set

    def split_combinations(self, split: str) -> list[ToyAttributes]:
        """The combinations of `split` ("train" or "held_out")."""
        if split == "train":
            return self.train_combinations
        if split == "held_out":
            return self.held_out_combinations
        raise ValueError(f"`split` must be 'train' or 'held_out'; got {split!r}.")

    # ----------------------------------------------------------------------------------------------------
    # Rendering
    # ----------------------------------------------------------------------------------------------------
    def render(self, attributes: ToyAttributes, variant: int = 0, stream: str = "train") -> Image.Image:
        """Render one image of `attributes` (an RGB PIL image of `image_size` pixels).

        `variant` and `stream` pick the jitter (position +-1 px, size, rotation, color noise, texture phase):
        the same arguments always give the same pixels; evaluation uses `stream="eval"` so that its images
        are never the ones a model was trained on.
        """
        rng = np.random.default_rng(_seed_from("render", self.seed, stream, attributes.index, variant))
        side = self.image_size
        canvas = self._background(attributes.background, rng)
        scale = 4  # draw the object at 4x and downsample: antialiased edges
        big = side * scale
        layer = Image.new("L", (big, big), 0)
        cx, cy = _CENTRES[attributes.position]
        jitter = rng.uniform(-1.0, 1.0, size=2) * side / 32
        centre = ((cx * side + jitter[0]) * scale, (cy * side + jitter[1]) * scale)
        radius = (_RADII[attributes.size] + rng.uniform(-0.012, 0.012)) * big
        angle = rng.uniform(-10.0, 10.0)
        _draw_shape(ImageDraw.Draw(layer), attributes.shape, centre, radius, angle)
        alpha = np.asarray(layer.resize((side, side), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
        colour = np.clip(np.array(_RGB[attributes.color], dtype=np.float32) + rng.normal(0.0, 8.0, size=3), 0, 255)
        pixels = canvas * (1.0 - alpha) + colour * alpha
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")

    def _background(self, kind: str, rng: np.random.Generator) -> np.ndarray:
        side = self.image_size
        base = rng.uniform(105.0, 130.0)
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        offset = rng.integers(0, 8, size=2)
        unit = max(2, side // 8)
        if kind == "plain":
            gray = np.full((side, side), base, dtype=np.float32)
        elif kind == "striped":
            gray = np.where(((x + y + offset[0]) // unit) % 2 == 0, base - 25.0, base + 30.0)
        elif kind == "dotted":
            period = unit * 2
            near = (((x + offset[0]) % period) - period / 2) ** 2 + (((y + offset[1]) % period) - period / 2) ** 2
            gray = np.where(near <= (unit / 2) ** 2 + 0.5, base + 55.0, base - 10.0)
        elif kind == "checkered":
            gray = np.where((((x + offset[0]) // unit) + ((y + offset[1]) // unit)) % 2 == 0, base - 25.0, base + 30.0)
        else:  # pragma: no cover - ToyAttributes validates the value
            raise ValueError(f"Unknown background {kind!r}.")
        gray = gray + rng.normal(0.0, 3.0, size=gray.shape)
        return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)

    def render_batch(
        self, combinations: Sequence[ToyAttributes], variants: Sequence[int] | int = 0, stream: str = "train"
    ) -> np.ndarray:
        """Render many images into a `uint8` array of shape `(n, image_size, image_size, 3)`."""
        if isinstance(variants, int):
            variants = [variants] * len(combinations)
        if len(variants) != len(combinations):
            raise ValueError(f"Got {len(combinations)} combinations but {len(variants)} variants.")
        return (
            np.stack([np.asarray(self.render(c, v, stream)) for c, v in zip(combinations, variants)])
            if combinations
            else np.zeros((0, self.image_size, self.image_size, 3), dtype=np.uint8)
        )

    # ----------------------------------------------------------------------------------------------------
    # Text
    # ----------------------------------------------------------------------------------------------------
    @staticmethod
    def caption(attributes: ToyAttributes, template: int = 0) -> str:
        """The caption of `attributes` written with `CAPTION_TEMPLATES[template]`."""
        return _fix_articles(CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(**_slots(attributes)))

    def captions(self, split: str = "train", per_combination: int = len(CAPTION_TEMPLATES)) -> list[str]:
        """Captions of every combination of `split` with `per_combination` templates each (the LinCIR corpus).

        With the default every template is used once per combination; fewer picks templates at random.
        """
        rng = np.random.default_rng(_seed_from("captions", self.seed, split))
        captions = []
        for attributes in self.split_combinations(split):
            if per_combination >= len(CAPTION_TEMPLATES):
                templates = range(len(CAPTION_TEMPLATES))
            else:
                templates = rng.choice(len(CAPTION_TEMPLATES), size=per_combination, replace=False)
            captions.extend(self.caption(attributes, int(t)) for t in templates)
        return captions

    @staticmethod
    def modification_text(
        reference: ToyAttributes, target: ToyAttributes, rng: np.random.Generator | None = None
    ) -> str:
        """A modification text turning `reference` into `target` ("make it blue and move it to the left")."""
        rng = rng if rng is not None else np.random.default_rng(0)
        changed = reference.differences(target)
        if not changed:
            raise ValueError("`reference` and `target` are the same combination: nothing to modify.")
        parts = []
        for name in changed:
            value = getattr(target, name)
            if name == "size" and rng.random() < 0.3:
                parts.append(_SIZE_COMPARATIVES[value])
                continue
            templates = MODIFICATION_TEMPLATES[name]
            template = templates[int(rng.integers(len(templates)))]
            phrase = _POSITION_PHRASES.get(value, value)
            parts.append(template.format(a=_article(value), value=value, phrase=phrase))
        return " and ".join(parts)

    # ----------------------------------------------------------------------------------------------------
    # Composed retrieval
    # ----------------------------------------------------------------------------------------------------
    def triplets(
        self, split: str = "train", num_triplets: int = 1000, seed: int = 0, two_change_fraction: float = 0.3
    ) -> list[ToyTriplet]:
        """Random CIR triplets whose reference and target both belong to `split`'s combinations for "train",
        and whose target is held out for "held_out" (its reference may be any combination).

        A fraction `two_change_fraction` changes two attributes at once, the rest one.
        """
        if not 0.0 <= two_change_fraction <= 1.0:
            raise ValueError(f"`two_change_fraction` must be in [0, 1]; got {two_change_fraction}.")
        rng = np.random.default_rng(_seed_from("triplets", self.seed, split, seed))
        targets = self.split_combinations(split)
        triplets = []
        while len(triplets) < num_triplets:
            target = targets[int(rng.integers(len(targets)))]
            num_changes = 2 if rng.random() < two_change_fraction else 1
            names = sorted(
                rng.choice(list(ATTRIBUTES), size=num_changes, replace=False).tolist(), key=list(ATTRIBUTES).index
            )
            changes = {}
            for name in names:
                others = [v for v in ATTRIBUTES[name] if v != getattr(target, name)]
                changes[name] = others[int(rng.integers(len(others)))]
            reference = target.replace(**changes)
            if split == "train" and self.is_held_out(reference):
                continue
            text = self.modification_text(reference, target, rng)
            triplets.append(ToyTriplet(reference, text, target, tuple(names)))
        return triplets

    def queries(
        self, split: str = "held_out", num_queries: int = 600, gallery_size: int = 101, seed: int = 0
    ) -> list[ToyQuery]:
        """Benchmark queries, each with its own gallery of `gallery_size` distinct combinations.

        The gallery holds the target, its 20 one-attribute neighbours, the reference, and random others.
        """
        minimum = NUM_NEIGHBOURS + 2
        if gallery_size < minimum:
            raise ValueError(
                f"`gallery_size` must be at least {minimum} (target, neighbours, reference); got {gallery_size}."
            )
        if gallery_size > len(self.combinations):
            raise ValueError(f"`gallery_size` must be at most {len(self.combinations)}; got {gallery_size}.")
        rng = np.random.default_rng(_seed_from("queries", self.seed, split, seed))
        queries = []
        for index, triplet in enumerate(self.triplets(split, num_queries, seed=seed)):
            members = [triplet.target, *triplet.target.neighbours()]
            if triplet.reference not in members:
                members.append(triplet.reference)
            chosen = set(members)
            while len(members) < gallery_size:
                candidate = self.combinations[int(rng.integers(len(self.combinations)))]
                if candidate not in chosen:
                    chosen.add(candidate)
                    members.append(candidate)
            order = rng.permutation(len(members))
            gallery = tuple(members[i] for i in order)
            queries.append(ToyQuery(triplet, gallery, gallery.index(triplet.target), variant=index))
        return queries


def _regular_polygon(centre, radius, sides, angle_degrees, start=-90.0):
    cx, cy = centre
    return [
        (
            cx + radius * np.cos(np.deg2rad(start + angle_degrees + 360.0 * k / sides)),
            cy + radius * np.sin(np.deg2rad(start + angle_degrees + 360.0 * k / sides)),
        )
        for k in range(sides)
    ]


def _rotate(points, centre, angle_degrees):
    cx, cy = centre
    theta = np.deg2rad(angle_degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre, radius: float, angle: float) -> None:
    cx, cy = centre
    if shape == "circle":
        r = radius * 0.92
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "square":
        draw.polygon(_regular_polygon(centre, radius * 1.05, 4, angle + 45.0), fill=255)
    elif shape == "diamond":
        points = [(cx, cy - radius * 1.1), (cx + radius * 0.72, cy), (cx, cy + radius * 1.1), (cx - radius * 0.72, cy)]
        draw.polygon(_rotate(points, centre, angle), fill=255)
    elif shape == "triangle":
        points = _regular_polygon((cx, cy + radius * 0.15), radius * 1.15, 3, angle)
        draw.polygon(points, fill=255)
    elif shape == "cross":
        w = radius * 0.36
        r = radius
        bar_h = [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)]
        bar_v = [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)]
        draw.polygon(_rotate(bar_h, centre, angle), fill=255)
        draw.polygon(_rotate(bar_v, centre, angle), fill=255)
    elif shape == "star":
        points = []
        for k in range(10):
            r = radius * (1.1 if k % 2 == 0 else 0.45)
            theta = np.deg2rad(-90.0 + angle + 36.0 * k)
            points.append((cx + r * np.cos(theta), cy + r * np.sin(theta)))
        draw.polygon(points, fill=255)
    else:  # pragma: no cover - ToyAttributes validates the value
        raise ValueError(f"Unknown shape {shape!r}.")


_ATTRIBUTE_WORDS = frozenset(value for values in ATTRIBUTES.values() for value in values)


def toy_keyword_spans(captions: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Character spans of the attribute words of each toy caption: LinCIR's keywords in the toy world.

    A keyword extractor for `training/train_lincir.py --keyword_extractor hf_cir.toy.world:toy_keyword_spans`: the
    words that name a shape, a color, a size, a position or a background are the keywords (one span each), so
    `--masking_policy random` masks a random subset of the object's attributes.

    Example:

    ```python
    >>> from hf_cir.toy.world import toy_keyword_spans
    >>> caption = "a small red circle on the left on a plain background"
    >>> [caption[s:e] for s, e in toy_keyword_spans([caption])[0]]
    ['small', 'red', 'circle', 'left', 'plain']
    ```
    """
    spans = []
    for caption in captions:
        if not isinstance(caption, str):
            raise TypeError(f"Captions must be strings; got {type(caption).__name__}.")
        spans.append([(m.start(), m.end()) for m in re.finditer(r"[a-z]+", caption) if m.group() in _ATTRIBUTE_WORDS])
    return spans

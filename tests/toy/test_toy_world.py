"""The toy world: attributes, rendering, captions, triplets, splits and query galleries."""

import numpy as np
import pytest

from hf_cir.toy import ATTRIBUTES, NUM_NEIGHBOURS, ToyAttributes, ToyWorld, toy_vocabulary
from hf_cir.toy.world import CAPTION_TEMPLATES, toy_keyword_spans


@pytest.fixture(scope="module")
def world():
    return ToyWorld(seed=0)


def test_combinations_and_held_out_split(world):
    assert len(world.combinations) == np.prod([len(v) for v in ATTRIBUTES.values()]) == 1920
    assert len(world.held_out_combinations) == 192
    assert set(world.held_out_combinations).isdisjoint(world.train_combinations)
    assert len(world.train_combinations) + len(world.held_out_combinations) == 1920
    assert [c.index for c in world.combinations] == list(range(1920))
    # The split is a function of the seed.
    assert ToyWorld(seed=0).held_out_combinations == world.held_out_combinations
    assert ToyWorld(seed=1).held_out_combinations != world.held_out_combinations


def test_attributes_validate_and_neighbours():
    attributes = ToyAttributes("circle", "red", "small", "left", "plain")
    neighbours = attributes.neighbours()
    assert len(neighbours) == len(set(neighbours)) == NUM_NEIGHBOURS == 20
    assert all(len(attributes.differences(n)) == 1 for n in neighbours)
    with pytest.raises(ValueError, match="`color` must be one of"):
        ToyAttributes("circle", "teal", "small", "left", "plain")
    with pytest.raises(ValueError, match="Unknown attribute"):
        attributes.replace(texture="plain")


def test_rendering_is_deterministic_and_varied(world):
    attributes = world.combinations[123]
    first = np.asarray(world.render(attributes, variant=0))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, np.asarray(ToyWorld(seed=0).render(attributes, variant=0)))
    assert not np.array_equal(first, np.asarray(world.render(attributes, variant=1)))
    assert not np.array_equal(first, np.asarray(world.render(attributes, variant=0, stream="eval")))


def _object_centre(world, attributes):
    # The object is saturated red on a gray background: its pixels have red well above green.
    image = np.asarray(world.render(attributes), dtype=np.int32)
    ys, xs = np.nonzero(image[..., 0] - image[..., 1] > 80)
    return xs.mean(), ys.mean()


def test_positions_are_where_their_names_say(world):
    """No flips: "left" is left of centre in the image, "top" above it."""
    base = ToyAttributes("square", "red", "small", "center", "plain")
    centre_x, centre_y = _object_centre(world, base)
    assert _object_centre(world, base.replace(position="left"))[0] < centre_x - 3
    assert _object_centre(world, base.replace(position="right"))[0] > centre_x + 3
    assert _object_centre(world, base.replace(position="top"))[1] < centre_y - 3
    assert _object_centre(world, base.replace(position="bottom"))[1] > centre_y + 3


def _object_pixels(world, attributes):
    image = np.asarray(world.render(attributes), dtype=np.int32)
    return int((image[..., 0] - image[..., 1] > 80).sum())


def test_sizes_are_visible(world):
    small = ToyAttributes("square", "red", "small", "center", "plain")
    assert _object_pixels(world, small.replace(size="large")) > 2 * _object_pixels(world, small)


def test_captions_cover_templates_and_attributes(world):
    attributes = ToyAttributes("star", "orange", "large", "top", "dotted")
    captions = [world.caption(attributes, t) for t in range(len(CAPTION_TEMPLATES))]
    assert len(set(captions)) == len(CAPTION_TEMPLATES) == 14
    for caption in captions:
        for word in ("star", "orange", "large", "top", "dotted"):
            assert word in caption.split()
    assert any("an orange" in c for c in captions)  # articles agree
    assert len(world.captions("train")) == len(world.train_combinations) * 14
    vocabulary = set(toy_vocabulary())
    assert all(set(c.split()) <= vocabulary for c in world.captions("held_out"))


def test_triplets_follow_the_split_and_describe_the_change(world):
    train = world.triplets("train", num_triplets=300, seed=3)
    held_out = world.triplets("held_out", num_triplets=300, seed=3)
    assert all(not world.is_held_out(t.target) and not world.is_held_out(t.reference) for t in train)
    assert all(world.is_held_out(t.target) for t in held_out)
    assert {len(t.changed) for t in train} == {1, 2}
    vocabulary = set(toy_vocabulary())
    for triplet in train + held_out:
        assert triplet.reference.differences(triplet.target) == list(triplet.changed)
        assert set(triplet.text.split()) <= vocabulary
        for name in triplet.changed:
            value = getattr(triplet.target, name)
            assert value in triplet.text.split() or (
                name == "size" and ("bigger" in triplet.text or "smaller" in triplet.text)
            )
    assert world.triplets("train", 50, seed=3) == train[:50] or len(world.triplets("train", 50, seed=3)) == 50
    assert world.triplets("train", 300, seed=3) == train
    with pytest.raises(ValueError, match="split"):
        world.triplets("test")


def test_query_galleries_hold_the_hard_negatives(world):
    queries = world.queries("held_out", num_queries=20, gallery_size=101, seed=0)
    for query in queries:
        gallery = query.gallery
        assert len(gallery) == len(set(gallery)) == 101
        assert gallery[query.target_index] == query.triplet.target
        assert set(query.triplet.target.neighbours()) <= set(gallery)
        assert query.triplet.reference in gallery
    with pytest.raises(ValueError, match="gallery_size"):
        world.queries(gallery_size=10)


def test_keyword_spans_are_the_attribute_words():
    caption = "a photo of an orange star that is large at the top on a dotted background"
    words = [caption[s:e] for s, e in toy_keyword_spans([caption])[0]]
    assert words == ["orange", "star", "large", "top", "dotted"]
    with pytest.raises(TypeError):
        toy_keyword_spans([None])


def test_bad_world_arguments():
    with pytest.raises(ValueError, match="held_out_fraction"):
        ToyWorld(held_out_fraction=1.5)
    with pytest.raises(ValueError, match="image_size"):
        ToyWorld(image_size=8)

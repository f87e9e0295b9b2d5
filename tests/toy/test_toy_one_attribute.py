"""Obvious one-attribute queries over the whole toy gallery (60 queries: 12 per attribute, phrasings of our own),
each shipped model with its own defaults through the public API."""

import pytest

from hf_cir.toy import ATTRIBUTES, toy_checkpoint

from .one_attribute import one_attribute_ranks, recall


@pytest.fixture(scope="module")
def ranks():
    return {
        "lincir": one_attribute_ranks(toy_checkpoint("lincir")),
        "sum": one_attribute_ranks(toy_checkpoint("lincir"), method="sum"),
        "compodiff": one_attribute_ranks(toy_checkpoint("compodiff")),
    }


def test_every_attribute_is_queried(ranks):
    for per_attribute in ranks.values():
        assert set(per_attribute) == set(ATTRIBUTES) and all(len(r) == 12 for r in per_attribute.values())


def test_compodiff_with_its_checkpoint_defaults_finds_obvious_targets(ranks):
    # With the reference's 7.5 / 1.5 (the pipeline's defaults before the checkpoint held its own) this small prior
    # ranked these targets near the bottom of the gallery: R@5 3.3, R@10 3.3. Measured with the checkpoint's
    # defaults: R@1 15.0, R@5 38.3, R@10 50.0.
    assert recall(ranks["compodiff"], 5) >= 30.0 and recall(ranks["compodiff"], 10) >= 40.0, ranks["compodiff"]


def test_lincir_beats_the_sum_baseline_at_5_and_10(ranks):
    # Measured: LinCIR R@5 56.7 / R@10 73.3, sum 45.0 / 65.0.
    for k in (5, 10):
        assert recall(ranks["lincir"], k) > recall(ranks["sum"], k), (k, ranks)


@pytest.mark.xfail(
    strict=True,
    reason="issue 20's target (R@1 >= 60, R@5 >= 90 for LinCIR and CompoDiff) is not met by the shipped toy "
    "checkpoints (LinCIR 20.0 / 56.7, CompoDiff 15.0 / 38.3): the toy CLIP does not separate shapes well enough",
)
def test_issue_20_target_for_obvious_queries(ranks):
    for name in ("lincir", "compodiff"):
        assert recall(ranks[name], 1) >= 60.0 and recall(ranks[name], 5) >= 90.0, (name, ranks[name])

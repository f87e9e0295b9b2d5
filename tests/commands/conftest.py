"""The CLI tests use the retrieval tests' tiny models and galleries."""

from retrieval.conftest import compodiff_dir, gallery_dir, lincir_dir, lincir_other_size_dir  # noqa: F401

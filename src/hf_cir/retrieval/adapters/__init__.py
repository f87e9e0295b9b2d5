"""The retrieval adapter of each model family (`ModelFamily.retrieval_model` in `hf_cir.families`): one module per
family, a `RetrievalModel` subclass in each. Nothing imports them by name: `load_retrieval_model` asks the registry."""

"""Subcommands of the `hf-cir` command line (see `hf_cir.cli`)."""

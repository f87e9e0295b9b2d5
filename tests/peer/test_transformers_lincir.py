"""transformers' own ModelTesterMixin, ConfigTester and ProcessorTesterMixin on LinCIRConfig / Model / Processor.

The mixins come from the sdist of the installed transformers (materialised by conftest.py, never stored here). Every
test that does not apply to LinCIR is listed in `NOT_APPLICABLE` below with its reason.
"""

import unittest
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPVisionConfig
from transformers_tests.test_configuration_common import ConfigTester
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor
from transformers_tests.test_processing_common import ProcessorTesterMixin

from hf_cir import LinCIRConfig, LinCIRModel, LinCIRProcessor

REFERENCE_CLIP = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "clip"

# test name -> why it does not apply to LinCIR. Each entry is turned into a unittest skip with that reason.
NOT_APPLICABLE_MODEL = {}
NOT_APPLICABLE_PROCESSOR = {}


def not_applicable(table):
    """Class decorator: replace each listed inherited test by a skip that states the reason."""

    def decorate(cls):
        for name, reason in table.items():
            if not hasattr(cls, name):
                raise AttributeError(f"{cls.__name__} has no test {name!r} to skip; update the list.")

            def skipped(self, *args, _reason=reason, **kwargs):
                self.skipTest(_reason)

            skipped.__name__ = name
            setattr(cls, name, unittest.skip(reason)(skipped))
        return cls

    return decorate


class LinCIRModelTester:
    """Tiny LinCIR inputs: every text holds the placeholder once and ends with EOS, as LinCIRProcessor makes them."""

    def __init__(self, parent, batch_size=3, seq_length=9, vocab_size=99, hidden_size=32, projection_dim=24):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.is_training = True
        self.placeholder_token_id = 5
        self.eos_token_id = vocab_size - 1
        self.image_size = 30
        self.num_channels = 3
        self.num_hidden_layers = 2
        # The top-level hidden states and attentions are the text tower's.
        self.hidden_size = hidden_size
        self.num_attention_heads = 4
        self.text_config = {
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 37,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "max_position_embeddings": 64,
            "projection_dim": projection_dim,
            "bos_token_id": vocab_size - 2,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": 1,
        }
        self.vision_config = {
            "hidden_size": hidden_size,
            "intermediate_size": 37,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": 4,
            "image_size": self.image_size,
            "patch_size": 10,
            "num_channels": self.num_channels,
            "projection_dim": projection_dim,
        }
        self.projection_dim = projection_dim

    def get_config(self):
        return LinCIRConfig(
            text_config=CLIPTextConfig(**self.text_config),
            vision_config=CLIPVisionConfig(**self.vision_config),
            projection_dim=self.projection_dim,
            phi_hidden_size=40,
            phi_dropout=0.1,
            placeholder_token_id=self.placeholder_token_id,
        )

    def prepare_config_and_inputs(self):
        # Ordinary word ids lie strictly between the placeholder and the special tokens.
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 8) + 6
        input_ids[:, 1] = self.placeholder_token_id
        # Right padding, as the tokenizer pads: each text ends with EOS at a random length of at least 4 tokens.
        lengths = ids_tensor([self.batch_size], self.seq_length - 3) + 4
        attention_mask = (torch.arange(self.seq_length)[None] < lengths[:, None]).long()
        input_ids[torch.arange(self.batch_size), lengths - 1] = self.eos_token_id
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), input_ids, attention_mask, pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask, pixel_values = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


@not_applicable(NOT_APPLICABLE_MODEL)
class LinCIRModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (LinCIRModel,)
    _is_composite = True

    def setUp(self):
        self.model_tester = LinCIRModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=LinCIRConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "phi_hidden_size", "placeholder_token"],
            projection_dim=32,
            phi_hidden_size=48,
            placeholder_token_id=259,
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # LinCIR's "labels" are the masked captions of its self-masking-projection loss: with them, `forward` returns
        # the training loss (texts only, no image), as train_lincir.py calls it.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            inputs_dict.pop("pixel_values")
            masked = inputs_dict["input_ids"].clone()
            masked[:, 2:4] = self.model_tester.placeholder_token_id
            inputs_dict["masked_input_ids"] = masked
            # The loss's noise comes from the global RNG; without noise two calls (tuple vs dict output) agree.
            inputs_dict["noise_std"] = 0.0
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()


@not_applicable(NOT_APPLICABLE_PROCESSOR)
class LinCIRProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = LinCIRProcessor
    # The stored tiny CLIP (real OpenAI CLIP tokenizer, 32-pixel image processor): no Hub access needed.
    model_id = str(REFERENCE_CLIP)

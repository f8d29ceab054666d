"""onnxmoe reference tooling: an independent torch forward for HF MoE families and a
small safetensors reader/writer. Run scripts from the repository root with /usr/bin/python3."""

from .families import ArchSpec, SUPPORTED, make_config, spec_from_config
from .model import (MoeForCausalLM, golden_logits, load_pretrained, moe_aux_loss, save_pretrained,
                    write_golden)
from . import safetensors_io

__all__ = ["ArchSpec", "SUPPORTED", "make_config", "spec_from_config", "MoeForCausalLM", "golden_logits",
           "load_pretrained", "moe_aux_loss", "save_pretrained", "write_golden", "safetensors_io"]

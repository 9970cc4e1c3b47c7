"""Full fine-tuning: every parameter trains; the whole model is saved in Hugging Face format."""

from __future__ import annotations

from pathlib import Path


class FullFineTuning:
    name = "full"

    def prepare(self, model, method_config):
        for param in model.parameters():
            param.requires_grad_(True)
        return model

    def save(self, model, out_dir: Path) -> None:
        model.save_pretrained(out_dir)  # safetensors is transformers' default and only format we write

"""Build tool for the shipped LoRA adapters (tuned pairs); never imported by the package."""

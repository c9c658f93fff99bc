"""Training loops: GA-DMS pre-training and IRRA-style fine-tuning, resumable, DDP-ready."""

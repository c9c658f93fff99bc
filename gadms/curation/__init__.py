"""Curation (SPEC 2-3): web shards -> person crops -> captions -> curated WebDataset shards."""

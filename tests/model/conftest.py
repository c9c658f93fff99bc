import pytest
import torch

from gadms.config import ModelConfig
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel

CAPTIONS = [
    "A man wearing a red t-shirt and blue jeans.",
    "A woman with long black hair in a green coat and white shoes.",
    "The lady carries a yellow handbag.",
    "A guy in a gray hoodie, black shorts and orange sneakers is walking forward.",
]


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return PersonRetrievalModel(Architecture.from_config(ModelConfig()))


@pytest.fixture(scope="session")
def tok():
    return tokenizer(77)


@pytest.fixture()
def batch(tok):
    g = torch.Generator().manual_seed(1)
    return torch.randn(len(CAPTIONS), 3, 128, 64, generator=g), tok(CAPTIONS)

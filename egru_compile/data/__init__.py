"""Text corpora and vocabularies (AWD-LSTM / EvNN conventions)."""
from .vocab import DataError, Vocabulary, read_tokens

__all__ = ["DataError", "Vocabulary", "read_tokens"]

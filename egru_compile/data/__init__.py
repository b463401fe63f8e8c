"""Text corpora and vocabularies (AWD-LSTM / EvNN conventions)."""
from .vocab import DataError, Encoded, Vocabulary, read_tokens, text_tokens

__all__ = ["DataError", "Encoded", "Vocabulary", "read_tokens", "text_tokens"]

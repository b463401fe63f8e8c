"""Text corpora and vocabularies (AWD-LSTM / EvNN conventions)."""
from .ptb import ptb_dir, ptb_file
from .vocab import DataError, Encoded, Vocabulary, read_tokens, text_tokens

__all__ = ["DataError", "Encoded", "Vocabulary", "ptb_dir", "ptb_file", "read_tokens", "text_tokens"]

"""Records (the one vocabulary of files between stages), JSONL readers/writers, format converters."""

from rlhaif.data.records import (
    CompletionRecord,
    DemoRecord,
    Message,
    PairRecord,
    PromptRecord,
    prompt_text,
)
from rlhaif.data.io import read_jsonl, read_records, write_jsonl, write_records

__all__ = [
    "CompletionRecord", "DemoRecord", "Message", "PairRecord", "PromptRecord", "prompt_text",
    "read_jsonl", "read_records", "write_jsonl", "write_records",
]

"""Columns the store writes cheaply: text of a few distinct values repeated on many rows.

Such a column (connection tags on every record of a connection, flag names on every packet)
is built as an Arrow dictionary over the distinct values, and Parquet stores it as it is:
no string per row is made, and none is hashed again to find the dictionary. Readers get plain
strings back (store.files writes no Arrow schema).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def dictionary(indices: np.ndarray, values: pa.Array) -> pa.Array:
    """values[indices] as a dictionary array of distinct values (nulls among `values` become null rows)."""
    indices = np.asarray(indices, np.int32)
    mask = None
    if values.null_count:  # Parquet cannot write a null inside a dictionary: the row is null instead
        mask = np.asarray(values.is_null())[indices]
        values = values.fill_null("")
    if len(values) > 1:  # a value twice in a dictionary makes Parquet write the column as plain text, 2x slower
        enc = pc.dictionary_encode(values)
        if len(enc.dictionary) < len(values):
            indices, values = enc.indices.to_numpy()[indices], enc.dictionary
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32(), mask=mask), values)

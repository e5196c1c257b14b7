#!/usr/bin/env python3
"""Writes tests/data/pyarrow-* with pyarrow (23.0.0), as the `datasets` library writes its files:
six rows of a `text` (large string) and an integer `label` column (a ClassLabel), one text empty
and one label missing. Run from tests/data with the bench venv and `pip install pyarrow==23.0.0`.
"""
import pyarrow as pa, pyarrow.parquet as pq
texts = ["the goalie stopped every shot", "nasa launched a telescope", "", "café naïve", "a third topic", "the senate voted"]
labels = [0, 1, 0, 1, None, 0]
table = pa.table({"text": pa.array(texts, pa.large_string()), "label": pa.array(labels, pa.int64())})
pq.write_table(table, "pyarrow-snappy.parquet")  # snappy by default, as datasets' to_parquet
with pa.OSFile("pyarrow-stream.arrow", "wb") as sink:  # the IPC stream format datasets' cache files use
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
pq.write_table(table.cast(pa.schema([("text", pa.string()), ("label", pa.float64())])), "pyarrow-zstd-floats.parquet", compression="zstd")
print("written")

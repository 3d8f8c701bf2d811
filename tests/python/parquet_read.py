"""Reads the Parquet record sink's tables back with two independent readers,
pyarrow (datasets with Hive partitioning) and DuckDB (read_parquet with
hive_partitioning=true), and prints what each saw as one JSON document, for
tests/tests/records_parquet.rs.

    parquet_read.py local <root-dir>
    parquet_read.py s3 <endpoint-url> <bucket/prefix>   (keys from AWS_* env)
    parquet_read.py gcs <endpoint-url> <bucket/prefix>  (an emulator: anonymous)
    parquet_read.py azure <host:port> <container/prefix>
        (Azurite; account and key from AZURE_STORAGE_ACCOUNT_NAME/_KEY)

pyarrow reaches S3, GCS and Azure through its own C++ clients (the AWS,
google-cloud-cpp and Azure SDKs), none of which the gateway uses.
"""

import json
import os
import sys
from datetime import timedelta

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs


def tensor(t):
    if t is None:
        return None
    return {
        "dtype": t["dtype"],
        "shape": t["shape"],
        "values": t["values"],
        "strings": t["strings"],
        "truncated": t["truncated"],
        "count": t["count"],
        "mean": t["mean"],
    }


def with_pyarrow(filesystem, root):
    out = {}
    for table in ("predictions", "outcomes"):
        base = f"{root}/{table}"
        if filesystem is None:
            filesystem = pafs.LocalFileSystem()
        # The files are listed first, not opened as a directory: S3 servers
        # need not answer HEAD on a prefix (s3s-fs does not).
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        files = sorted(f.path for f in filesystem.get_file_info(selector) if f.path.endswith(".parquet"))
        if not files:
            # A table no record of that kind was written to has no files.
            out[table], out[table + "_schema"] = [], {}
            continue
        dataset = ds.dataset(
            files, format="parquet", partitioning="hive", partition_base_dir=base, filesystem=filesystem
        )
        rows = dataset.to_table().to_pylist()
        for row in rows:
            row["date"] = str(row["date"])
            row.pop("ts", None)
            if table == "predictions":
                row["outputs"] = [
                    {
                        "name": o["name"],
                        "champion": tensor(o["champion"]),
                        "shadow": tensor(o["shadow"]),
                        "max_abs_diff": o["max_abs_diff"],
                        "mismatch": o["mismatch"],
                    }
                    for o in row["outputs"]
                ]
                row["inputs"] = None if row["inputs"] is None else [tensor(t) for t in row["inputs"]]
        out[table] = sorted(rows, key=lambda r: (r["request_id"], r["replica"]))
        out[table + "_schema"] = {f.name: str(f.type) for f in dataset.schema}
    return out


def with_duckdb(con, root):
    pred = f"read_parquet('{root}/predictions/**/*.parquet', hive_partitioning=true)"
    outc = f"read_parquet('{root}/outcomes/**/*.parquet', hive_partitioning=true)"
    predictions = con.execute(
        f"""SELECT request_id, replica, model, CAST("date" AS VARCHAR), champion_version, shadow_version,
                   shadow_error, outputs[1].name, outputs[1].champion."values", outputs[1].shadow."values",
                   outputs[1].champion.truncated
            FROM {pred} ORDER BY request_id, replica"""
    ).fetchall()
    joined = con.execute(
        f"""SELECT p.request_id, o.metric, o.value, o.version, p.shadow_version
            FROM {pred} p JOIN {outc} o ON p.request_id = o.request_id AND p.model = o.model
            ORDER BY p.request_id"""
    ).fetchall()
    keys = ["request_id", "replica", "model", "date", "champion_version", "shadow_version", "shadow_error",
            "output", "champion_values", "shadow_values", "truncated"]
    return {
        "predictions": [dict(zip(keys, row)) for row in predictions],
        "joined": [list(row) for row in joined],
    }


def azurite_fs(authority):
    """pyarrow's Azure filesystem on a plain-http endpoint (Azurite) at
    host:port, with the account and key from AZURE_STORAGE_ACCOUNT_NAME/_KEY."""
    return pafs.AzureFileSystem(
        account_name=os.environ["AZURE_STORAGE_ACCOUNT_NAME"],
        account_key=os.environ["AZURE_STORAGE_ACCOUNT_KEY"],
        blob_storage_authority=authority,
        blob_storage_scheme="http",
        dfs_storage_authority=authority,
        dfs_storage_scheme="http",
    )


def main():
    mode = sys.argv[1]
    if mode == "local":
        root = sys.argv[2].rstrip("/")
        result = {"pyarrow": with_pyarrow(None, root), "duckdb": with_duckdb(duckdb.connect(), root)}
    elif mode == "s3":
        endpoint, root = sys.argv[2], sys.argv[3].strip("/")
        scheme, host = endpoint.split("://", 1)
        fs = pafs.S3FileSystem(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ.get("AWS_REGION", "us-east-1"),
            endpoint_override=host,
            scheme=scheme,
        )
        result = {"pyarrow": with_pyarrow(fs, root)}
    elif mode == "gcs":
        endpoint, root = sys.argv[2], sys.argv[3].strip("/")
        scheme, host = endpoint.split("://", 1)
        fs = pafs.GcsFileSystem(anonymous=True, scheme=scheme, endpoint_override=host, retry_time_limit=timedelta(seconds=30))
        result = {"pyarrow": with_pyarrow(fs, root)}
    elif mode == "azure":
        authority, root = sys.argv[2], sys.argv[3].strip("/")
        result = {"pyarrow": with_pyarrow(azurite_fs(authority), root)}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

"""S3 clients independent of modelgate (boto3, pyarrow, DuckDB's httpfs)
for tests against the s3s-fs server of tests/src/s3.rs. Every command takes
--endpoint http://HOST:PORT --access-key K --secret-key S and prints JSON.

  multipart --bucket B --key K
      creates B through the API, uploads K in three parts (5 MiB, 5 MiB,
      1 MiB), reads it back, lists B, and tries a wrong secret; prints what
      it saw.
  parquet --bucket B --key K --rows N
      pyarrow writes N rows (i, square) to s3://B/K; DuckDB reads them back
      over S3; prints both sides' count and sums.
  query --sql SQL
      runs SQL in DuckDB with httpfs loaded and an S3 secret for the
      endpoint (so read_parquet('s3://bucket/key') works); prints
      {"columns": [...], "rows": [[...], ...]}.
"""

import argparse
import hashlib
import json
import os
import sys
from urllib.parse import urlparse

REGION = "us-east-1"


def s3_client(args, secret=None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=secret or args.secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def multipart(args):
    from botocore.exceptions import ClientError

    s3 = s3_client(args)
    s3.create_bucket(Bucket=args.bucket)
    parts_data = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(1024 * 1024)]
    upload = s3.create_multipart_upload(Bucket=args.bucket, Key=args.key)
    parts = []
    for number, data in enumerate(parts_data, start=1):
        r = s3.upload_part(Bucket=args.bucket, Key=args.key, UploadId=upload["UploadId"], PartNumber=number, Body=data)
        parts.append({"PartNumber": number, "ETag": r["ETag"]})
    s3.complete_multipart_upload(
        Bucket=args.bucket, Key=args.key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    whole = b"".join(parts_data)
    got = s3.get_object(Bucket=args.bucket, Key=args.key)["Body"].read()
    listed = s3.list_objects_v2(Bucket=args.bucket).get("Contents", [])
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    try:
        s3_client(args, secret="not-the-secret").list_objects_v2(Bucket=args.bucket)
        wrong_secret = "accepted"
    except ClientError as e:
        wrong_secret = e.response["Error"]["Code"]
    print(
        json.dumps(
            {
                "parts": len(parts),
                "put_sha256": hashlib.sha256(whole).hexdigest(),
                "get_sha256": hashlib.sha256(got).hexdigest(),
                "size": len(whole),
                "listed": [{"key": o["Key"], "size": o["Size"]} for o in listed],
                "buckets": buckets,
                "wrong_secret": wrong_secret,
            }
        )
    )


def sql_str(value):
    return "'" + value.replace("'", "''") + "'"


def duckdb_connection(args):
    import duckdb
    import duckdb_extension_httpfs

    con = duckdb.connect()
    # No extension may come from the network: httpfs is the wheel's build.
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    ext = os.path.join(
        os.path.dirname(duckdb_extension_httpfs.__file__), "extensions", f"v{duckdb.__version__}", "httpfs.duckdb_extension"
    )
    con.execute(f"LOAD '{ext}'")
    endpoint = urlparse(args.endpoint)
    use_ssl = "true" if endpoint.scheme == "https" else "false"
    con.execute(
        f"CREATE SECRET s3 (TYPE s3, KEY_ID {sql_str(args.access_key)}, SECRET {sql_str(args.secret_key)}, "
        f"REGION '{REGION}', ENDPOINT {sql_str(endpoint.netloc)}, URL_STYLE 'path', USE_SSL {use_ssl})"
    )
    return con


def parquet(args):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyarrow import fs

    endpoint = urlparse(args.endpoint)
    s3 = fs.S3FileSystem(
        access_key=args.access_key,
        secret_key=args.secret_key,
        region=REGION,
        scheme=endpoint.scheme,
        endpoint_override=endpoint.netloc,
    )
    s3_client(args).create_bucket(Bucket=args.bucket)
    i = pa.array(range(args.rows), type=pa.int64())
    table = pa.table({"i": i, "square": pc.multiply(i, i)})
    pq.write_table(table, f"{args.bucket}/{args.key}", filesystem=s3)
    con = duckdb_connection(args)
    count, total, squares = con.execute(
        f"SELECT count(*), sum(i), sum(square) FROM read_parquet('s3://{args.bucket}/{args.key}')"
    ).fetchone()
    print(
        json.dumps(
            {
                "written": table.num_rows,
                "expected_sum": sum(range(args.rows)),
                "expected_squares": sum(x * x for x in range(args.rows)),
                "duckdb_count": count,
                "duckdb_sum": int(total),
                "duckdb_squares": int(squares),
            }
        )
    )


def query(args):
    con = duckdb_connection(args)
    cur = con.execute(args.sql)
    columns = [d[0] for d in cur.description]
    print(json.dumps({"columns": columns, "rows": [list(r) for r in cur.fetchall()]}, default=str))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("multipart")
    m.add_argument("--bucket", required=True)
    m.add_argument("--key", required=True)
    p = sub.add_parser("parquet")
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--rows", type=int, default=1000)
    q = sub.add_parser("query")
    q.add_argument("--sql", required=True)
    for s in (m, p, q):
        s.add_argument("--endpoint", required=True)
        s.add_argument("--access-key", required=True)
        s.add_argument("--secret-key", required=True)
    args = parser.parse_args()
    {"multipart": multipart, "parquet": parquet, "query": query}[args.command](args)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the test shows the client's error
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)

"""Starts gcp-storage-emulator (PyPI) with the parts of GCS's XML API that
object_store's GCS client uses and the emulator lacks, for tests/src/gcs.rs.

object_store talks to GCS through the XML API only (object PUT and ranged
GET, and the ListObjectsV2-style bucket listing,
https://cloud.google.com/storage/docs/xml-api/get-bucket-list). The
emulator serves the JSON API fully but of the XML API only object PUT and
GET, and without the headers GCS sends. This adds, on the emulator's own
storage:

- `ETag` (the object's MD5 in hex, quoted, as GCS answers for a
  non-composite object) and `x-goog-generation` on an XML PUT;
- the same plus `Last-Modified` on an XML GET (ranged or not);
- `GET /<bucket>?list-type=2` with `prefix`, `delimiter`, `max-keys` and
  `continuation-token`, answering `ListBucketResult` XML as GCS does.

Nothing else is changed: objects are stored, read and listed by the
emulator, and the JSON API (which pyarrow's GCS filesystem reads through)
is the emulator's own.

    gcs_emulator.py start --host 127.0.0.1 --port P --in-memory
"""

import base64
import sys
from datetime import datetime, timezone
from email.utils import format_datetime
from http import HTTPStatus
from xml.sax.saxutils import escape

from gcp_storage_emulator import server as srv
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def _etag(obj):
    return '"{}"'.format(base64.b64decode(obj["md5Hash"]).hex())


def _object_headers(response, obj):
    response["ETag"] = _etag(obj)
    response["x-goog-generation"] = obj["generation"]
    response["Last-Modified"] = format_datetime(_parse_time(obj["updated"]).replace(tzinfo=timezone.utc), usegmt=True)


def xml_put(request, response, storage, *args, **kwargs):
    objects.xml_upload(request, response, storage)
    if response.status == HTTPStatus.OK:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["ETag"] = _etag(obj)
        response["x-goog-generation"] = obj["generation"]


def xml_get(request, response, storage, *args, **kwargs):
    objects.download(request, response, storage)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        _object_headers(response, obj)


def xml_list(request, response, storage, *args, **kwargs):
    bucket = request.params["bucket_name"]
    query = {k: v[0] for k, v in request.query.items()}
    if query.get("list-type") != "2":
        response.status = HTTPStatus.NOT_IMPLEMENTED
        return
    prefix = query.get("prefix") or None
    delimiter = query.get("delimiter") or None
    max_keys = int(query.get("max-keys", "1000"))
    after = query.get("continuation-token") or query.get("start-after") or ""
    try:
        objs, prefixes = storage.get_file_list(bucket, prefix, delimiter)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        response.write_file(b"<Error><Code>NoSuchBucket</Code></Error>", "application/xml")
        return
    # One ordered list of keys and common prefixes, paged by name.
    entries = sorted([(o["name"], o) for o in objs] + [(p, None) for p in prefixes], key=lambda e: e[0])
    entries = [e for e in entries if e[0] > after]
    page, rest = entries[:max_keys], entries[max_keys:]
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01">']
    out.append("<Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{}</MaxKeys>".format(
        escape(bucket), escape(prefix or ""), len(page), max_keys))
    if delimiter:
        out.append("<Delimiter>{}</Delimiter>".format(escape(delimiter)))
    out.append("<IsTruncated>{}</IsTruncated>".format("true" if rest else "false"))
    if rest:
        out.append("<NextContinuationToken>{}</NextContinuationToken>".format(escape(page[-1][0])))
    for name, obj in page:
        if obj is None:
            out.append("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>".format(escape(name)))
        else:
            out.append(
                "<Contents><Key>{}</Key><Generation>{}</Generation><LastModified>{}</LastModified>"
                "<ETag>{}</ETag><Size>{}</Size></Contents>".format(
                    escape(name), obj["generation"], _parse_time(obj["updated"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    escape(_etag(obj)), obj["size"]))
    out.append("</ListBucketResult>")
    response.write_file("".join(out).encode("utf-8"), "application/xml")


def _patch_routes():
    routes = list(srv.HANDLERS)
    # The XML object route is the last one (it must stay after the /b
    # aliases): its handlers get the headers, and the bucket listing goes
    # right before it, after the emulator's internal /wipe.
    regex, handlers = routes[-1]
    assert handlers.get(srv.PUT) is objects.xml_upload, "the emulator's routes changed"
    routes[-1] = (regex, {srv.GET: xml_get, srv.PUT: xml_put})
    routes.insert(len(routes) - 1, (r"^/(?P<bucket_name>[-.\w]+)/?$", {srv.GET: xml_list}))
    srv.HANDLERS = tuple(routes)


if __name__ == "__main__":
    _patch_routes()
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])

#!/usr/bin/env python3
"""Independent reference count of an image's bytes, for checking the Rust analysis.

Usage: independent_count.py LAYOUT_DIR:TAG

Reads one image from an OCI image layout (TAG is the org.opencontainers.image.ref.name annotation in
index.json; an image index is resolved to its linux/amd64 manifest, else its first one) and prints one
JSON object:

  {"pullBytes", "sizeBytes", "finalBytes", "wastedBytes", "efficiency",
   "layers": [{"digest", "sizeBytes", "fileCount", "wastedBytes"}, ...],
   "hiddenFileCount", "hiddenFiles": [{"path", "sizeBytes", "layer"}, ...]}

It follows the rules of DESIGN.md ("What bloat means: the analysis") on purpose in the plainest way:
every layer is read whole into a list, the filesystem is a dict of path -> entry, whiteouts are
applied by looping over all paths. It is meant to be obviously right, not fast, and to share no
structure with the streaming implementation it checks.

  S  sizeBytes    sum of regular-file sizes over every entry of every layer; hard-link entries and
                  whiteout markers (.wh.*) add nothing.
  F  finalBytes   sum of sizes of the regular-file contents visible after applying all layers;
                  content shared by hard links counts once while any of its names is visible.
  W  wastedBytes  S - F
     fileCount    per layer: its regular-file entries (whiteout markers and hard links are not files)
     hiddenFiles  every shipped content no visible name reaches at the end, under the path of the
                  entry that shipped it ("/" + path), with the layer that shipped it; a layer's
                  wastedBytes is the sum of its hidden contents' sizes. Sorted by path.
     efficiency   F / S, 1.0 when S is 0
     pullBytes    sum of the layer descriptors' sizes in the manifest

Layers may be gzip, zstd (needs the `zstd` command) or plain tar; the format is taken from the
bytes themselves, not the media type.
"""

import json
import os
import subprocess
import sys
import tarfile

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"


# ---- reading the layout -------------------------------------------------------------------------


def blob_path(layout, digest):
    algorithm, hex_digest = digest.split(":", 1)
    return os.path.join(layout, "blobs", algorithm, hex_digest)


def read_json_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return json.load(f)


def split_reference(reference):
    """LAYOUT_DIR:TAG where LAYOUT_DIR may itself contain ':' and TAG may too ("webapp:bloated")."""
    positions = [i for i, c in enumerate(reference) if c == ":"]
    for i in positions:
        candidate = reference[:i]
        if os.path.isfile(os.path.join(candidate, "index.json")):
            return candidate, reference[i + 1 :]
    if os.path.isfile(os.path.join(reference, "index.json")):
        return reference, None
    raise SystemExit("no OCI layout (index.json) found in %r" % reference)


def find_manifest(layout, tag):
    with open(os.path.join(layout, "index.json"), "rb") as f:
        index = json.load(f)
    chosen = None
    for descriptor in index.get("manifests", []):
        name = descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if tag is None or name == tag:
            chosen = descriptor
            break
    if chosen is None:
        raise SystemExit("tag %r not found in %s/index.json" % (tag, layout))
    document = read_json_blob(layout, chosen["digest"])
    # An image index: pick linux/amd64, else the first manifest.
    while "manifests" in document:
        pick = document["manifests"][0]
        for descriptor in document["manifests"]:
            platform = descriptor.get("platform", {})
            if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
                pick = descriptor
                break
        document = read_json_blob(layout, pick["digest"])
    return document


# ---- reading one layer --------------------------------------------------------------------------


def open_layer_stream(path):
    """Returns (file object with the plain tar stream, process or None)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"\x28\xb5\x2f\xfd":
        process = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE)
        return process.stdout, process
    # tarfile's "r|*" recognises gzip (and plain tar) by itself.
    return open(path, "rb"), None


def normalize(name):
    """Path as bytes with leading './' and '/' and trailing '/' stripped."""
    path = name.encode("utf-8", "surrogateescape")
    while True:
        if path.startswith(b"./"):
            path = path[2:]
        elif path.startswith(b"/"):
            path = path[1:]
        else:
            break
    while path.endswith(b"/"):
        path = path[:-1]
    if path == b".":
        path = b""
    return path


def read_layer(path):
    """All entries of one layer as a list of dicts, in tar order."""
    stream, process = open_layer_stream(path)
    entries = []
    try:
        with tarfile.open(
            fileobj=stream, mode="r|*", encoding="utf-8", errors="surrogateescape"
        ) as archive:
            for member in archive:
                if member.isreg():
                    kind = "file"
                elif member.isdir():
                    kind = "dir"
                elif member.islnk():
                    kind = "hardlink"
                elif member.issym():
                    kind = "symlink"
                else:
                    kind = "other"  # devices, fifos
                entries.append(
                    {
                        "path": normalize(member.name),
                        "kind": kind,
                        "size": member.size if kind == "file" else 0,
                        "link": normalize(member.linkname) if kind == "hardlink" else None,
                    }
                )
    finally:
        stream.close()
        if process is not None and process.wait() != 0:
            raise SystemExit("zstd -dc failed on %s" % path)
    return entries


# ---- the filesystem -----------------------------------------------------------------------------


def parent_of(path):
    if b"/" in path:
        return path.rsplit(b"/", 1)[0]
    return b""


def base_of(path):
    return path.rsplit(b"/", 1)[-1]


def is_under(path, directory):
    """True when path is strictly below directory ("" is the root)."""
    if directory == b"":
        return path != b""
    return path.startswith(directory + b"/")


def remove_subtree(fs, path):
    """Removes path and everything below it."""
    for existing in list(fs.keys()):
        if existing == path or is_under(existing, path):
            del fs[existing]


def remove_children(fs, directory):
    """Removes everything below directory, but not directory itself."""
    for existing in list(fs.keys()):
        if is_under(existing, directory):
            del fs[existing]


def count(layout, tag):
    manifest = find_manifest(layout, tag)

    # fs maps path (bytes) -> {"kind": ..., "content": content id or None}
    # contents maps content id -> size; a content id is (layer index, entry index) of the entry
    # that shipped the bytes. Hard links point at the same content id.
    fs = {}
    contents = {}
    total_size = 0
    pull_bytes = 0
    layer_reports = []
    shipped = {}  # content id -> the path of the entry that shipped it

    for layer_index, descriptor in enumerate(manifest["layers"]):
        pull_bytes += descriptor["size"]
        entries = read_layer(blob_path(layout, descriptor["digest"]))

        # 1. S for this layer: regular files only; whiteout markers and hard links add nothing.
        layer_size = 0
        layer_files = 0
        for entry in entries:
            if entry["kind"] == "file" and not base_of(entry["path"]).startswith(WHITEOUT_PREFIX):
                layer_size += entry["size"]
                layer_files += 1
        total_size += layer_size
        layer_reports.append(
            {"digest": descriptor["digest"], "sizeBytes": layer_size, "fileCount": layer_files}
        )
        for entry_index, entry in enumerate(entries):
            if entry["kind"] == "file" and not base_of(entry["path"]).startswith(WHITEOUT_PREFIX):
                shipped[(layer_index, entry_index)] = entry["path"]

        # 2. Whiteouts act on the lower layers only, so apply them all before any entry of this
        #    layer: then none of this layer's own entries can be removed, whatever the tar order.
        for entry in entries:
            name = base_of(entry["path"])
            directory = parent_of(entry["path"])
            if name == OPAQUE_MARKER:
                remove_children(fs, directory)
            elif name.startswith(b".wh..wh."):
                pass  # other reserved aufs markers (.wh..wh.plnk etc.) mean nothing here
            elif name.startswith(WHITEOUT_PREFIX):
                target = name[len(WHITEOUT_PREFIX) :]
                if directory == b"":
                    remove_subtree(fs, target)
                else:
                    remove_subtree(fs, directory + b"/" + target)

        # 3. The entries themselves, in tar order.
        for entry_index, entry in enumerate(entries):
            path = entry["path"]
            if path == b"" or base_of(path).startswith(WHITEOUT_PREFIX):
                continue

            # Every parent is a directory, written or not: one that is missing is implied, and one
            # that is not a directory (in the lower layers) is replaced by a directory.
            ancestor = parent_of(path)
            while ancestor != b"":
                node = fs.get(ancestor)
                if node is not None and node["kind"] != "dir":
                    del fs[ancestor]
                    node = None
                if node is None:
                    fs[ancestor] = {"kind": "dir", "content": None}
                ancestor = parent_of(ancestor)

            existing = fs.get(path)
            if entry["kind"] == "dir":
                if existing is not None and existing["kind"] != "dir":
                    del fs[path]  # a directory replacing a file removes the file
                fs[path] = {"kind": "dir", "content": None}
                continue

            if existing is not None and existing["kind"] == "dir":
                remove_subtree(fs, path)  # a non-directory replacing a directory removes the subtree

            if entry["kind"] == "file":
                content = (layer_index, entry_index)
                contents[content] = entry["size"]
                fs[path] = {"kind": "file", "content": content}
            elif entry["kind"] == "hardlink":
                target = fs.get(entry["link"])
                if target is None:
                    # A link to nothing: keep the name, it has no bytes.
                    fs[path] = {"kind": "other", "content": None}
                else:
                    fs[path] = {"kind": target["kind"], "content": target["content"]}
            else:
                fs[path] = {"kind": entry["kind"], "content": None}

    # F: every content reachable from a visible name, once.
    visible_contents = set()
    for path, node in fs.items():
        if node["kind"] == "file":
            visible_contents.add(node["content"])
    final_size = 0
    for content in visible_contents:
        final_size += contents[content]

    hidden = []
    for report in layer_reports:
        report["wastedBytes"] = 0
    for content, size in contents.items():
        if content not in visible_contents:
            layer_reports[content[0]]["wastedBytes"] += size
            path = "/" + shipped[content].decode("utf-8", "surrogateescape")
            hidden.append({"path": path, "sizeBytes": size, "layer": content[0]})
    hidden.sort(key=lambda h: h["path"])

    return {
        "hiddenFileCount": len(hidden),
        "hiddenFiles": hidden,
        "pullBytes": pull_bytes,
        "sizeBytes": total_size,
        "finalBytes": final_size,
        "wastedBytes": total_size - final_size,
        "efficiency": (final_size / total_size) if total_size > 0 else 1.0,
        "layers": layer_reports,
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    layout, tag = split_reference(sys.argv[1])
    print(json.dumps(count(layout, tag), indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Scale benchmark of `imagebloat run` on a real kube-apiserver (issue #3 item 5).

Default shape: 5,000 Pods in 500 Deployments (10 replicas each) over 50 images in the real test
registry. Playing the scheduler and the kubelet, it binds every Pod to a Node and patches its status
with `containerStatuses[].imageID = REPO@DIGEST`, then waits until every workload's ImageReport is
Ready and prints:

  * time from the first Deployment create until every report exists and is Ready (and from the first
    and the last Pod status patch);
  * API writes per workload (operator metric imagebloat_reports_written_total; each counted write is a
    server-side apply of the report plus one of its status, cross-checked with the API server's own
    apiserver_request_total for imagereports);
  * operator peak memory (VmHWM from /proc/PID/status), target <= 200 MiB;
  * registry bytes served for the bench's repositories (registry access log) vs the unique blob bytes
    pushed, target <= 1.05x.

Needs the environment of scripts/testenv.sh and scripts/kube-testenv.sh (sourced); python3 stdlib
only. scripts/scale-bench.sh is the one-command entry (starts the servers when they are not up).

  python3 scripts/scale_bench.py --operator target/release/imagebloat [--workloads 500 ...]
"""

import argparse
import collections
import concurrent.futures
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

MIB = 1 << 20
REPO_PREFIX = "scalebench"
TAG = "v1"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Once set (the first Deployment create), every log line shows the seconds since T0.
T0 = None


def log(msg):
    now = time.time()
    rel = f" +{now - T0:7.1f}s" if T0 else ""
    print(f"{time.strftime('%H:%M:%S', time.gmtime(now))}{rel} scale-bench: {msg}", flush=True)


def env(name):
    v = os.environ.get(name)
    if not v:
        sys.exit(f"scale-bench: ${name} is not set: source $(scripts/testenv.sh env) and $(scripts/kube-testenv.sh env)")
    return v


def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


# --------------------------------------------------------------------------------------------------
# Images: generated deterministically from a seed, pushed with the registry's HTTP API.
# --------------------------------------------------------------------------------------------------

# Maps random bytes to a 16-letter "text" alphabet: about 4 bits of entropy per byte, so gzip
# compresses it to a bit over half, like binaries and text in real layers.
TEXT_TABLE = bytes((b"etaoinshrdlu \n/._"[i % 17]) for i in range(256))


def content(rng, size, random_share):
    """File content: a mix of incompressible and text-like bytes."""
    r = int(size * random_share)
    return rng.randbytes(r) + rng.randbytes(size - r).translate(TEXT_TABLE)


class LayerSpec:
    def __init__(self, name, created_by, files, whiteouts=()):
        self.name = name
        self.created_by = created_by
        self.files = files  # [(path, size, random_share)]
        self.whiteouts = list(whiteouts)


def build_layer(spec, seed):
    """Returns (gzip bytes, diff_id, digest): a deterministic tar+gzip."""
    rng = random.Random(f"{seed}:{spec.name}")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        entries = [(p, s, r) for p, s, r in spec.files] + [(w, None, None) for w in spec.whiteouts]
        for path, size, share in sorted(entries, key=lambda e: e[0]):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    ti.mtime = 1700000000
                    tar.addfile(ti)
            ti = tarfile.TarInfo(path)
            ti.mode = 0o644
            ti.mtime = 1700000000
            if size is None:  # whiteout
                ti.size = 0
                tar.addfile(ti, io.BytesIO(b""))
            else:
                data = content(rng, size, share)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    return gz, "sha256:" + hashlib.sha256(tar_bytes).hexdigest(), "sha256:" + hashlib.sha256(gz).hexdigest()


def image_plan(n_images, scale):
    """The image set: shared base layers, shared runtime layers, per-image app layers (2-4 layers per
    image), some app layers deleting files of lower layers (waste) or leaving junk."""

    def sz(kib):
        return max(1, int(kib * 1024 * scale))

    n_bases = max(1, min(5, n_images // 10 or 1))
    n_runtimes = max(1, min(10, n_images // 5 or 1))
    bases = []
    for b in range(n_bases):
        files = [(f"usr/lib/x86_64-linux-gnu/lib{b}-{k:04d}.so", sz(3 + (k * 7) % 9), 0.6) for k in range(900)]
        files += [(f"usr/share/doc/pkg{k:03d}/changelog.gz", sz(2), 1.0) for k in range(300)]
        files += [(f"var/lib/apt/lists/deb.debian.org_dists_bookworm_{k}", sz(200), 0.2) for k in range(4)]
        files += [("usr/lib/locale/locale-archive", sz(1200), 0.3)]
        bases.append(LayerSpec(f"base-{b}", f"/bin/sh -c #(nop) ADD file:base{b} in / ", files))
    runtimes = []
    for r in range(n_runtimes):
        files = [(f"opt/runtime{r}/lib/module{k:03d}.py", sz(6), 0.1) for k in range(250)]
        files += [(f"opt/runtime{r}/bin/runtime", sz(1800), 0.9)]
        files += [(f"root/.cache/pip/wheels/w{k}.whl", sz(150), 1.0) for k in range(3)]
        runtimes.append(LayerSpec(f"runtime-{r}", f"RUN /bin/sh -c install-runtime {r}", files))
    images = []
    for i in range(n_images):
        n_layers = 2 + i % 3  # 2, 3 or 4
        layers = [bases[i % n_bases]]
        if n_layers >= 3:
            layers.append(runtimes[i % n_runtimes])
        n_app = n_layers - len(layers)
        for a in range(n_app):
            files = [(f"app/{i}/bin/service-{a}", sz(1500 + 97 * (i % 11)), 0.85)]
            files += [(f"app/{i}/assets/a{a}-{k:03d}.json", sz(8), 0.05) for k in range(60)]
            whiteouts = []
            if a == n_app - 1 and i % 2 == 0:
                # Deletes what a lower layer shipped: wasted bytes in the image.
                whiteouts.append(f"var/lib/apt/lists/.wh.deb.debian.org_dists_bookworm_{i % 4}")
                if len(layers) > 1 and layers[1].name.startswith("runtime"):
                    whiteouts.append(f"root/.cache/pip/wheels/.wh.w{i % 3}.whl")
            if a == n_app - 1 and i % 5 == 0:
                files.append((f"tmp/build-{i}.tar", sz(400), 1.0))  # junk left in the image
            layers.append(LayerSpec(f"app-{i}-{a}", f"COPY app{i}/part{a} /app/{i}/ # buildkit", files, whiteouts))
        images.append(layers)
    return images


class Registry:
    def __init__(self, host):
        self.host = host
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            h, p = self.host.rsplit(":", 1)
            c = self.local.c = http.client.HTTPConnection(h, int(p), timeout=120)
        return c

    def request(self, method, path, body=None, headers=None):
        for attempt in range(4):
            try:
                c = self.conn()
                c.request(method, path, body=body, headers=headers or {})
                r = c.getresponse()
                data = r.read()
                return r.status, dict(r.getheaders()), data
            except (OSError, http.client.HTTPException):
                self.local.c = None
                if attempt == 3:
                    raise
                time.sleep(0.5)

    def has_blob(self, repo, digest):
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200

    def mount_blob(self, repo, digest, source_repo):
        if self.has_blob(repo, digest):
            return "present"
        q = urllib.parse.urlencode({"mount": digest, "from": source_repo})
        st, _, body = self.request("POST", f"/v2/{repo}/blobs/uploads/?{q}", body=b"",
                                   headers={"Content-Length": "0"})
        if st != 201:
            raise RuntimeError(f"mount {digest} from {source_repo} into {repo}: {st} {body[:200]!r}")
        return "mounted"

    def push_blob(self, repo, digest, data):
        if self.has_blob(repo, digest):
            return "present"
        st, h, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
        if st != 202:
            raise RuntimeError(f"start upload {repo}: {st} {body[:200]!r}")
        loc = h.get("Location") or h.get("location")
        u = urllib.parse.urlsplit(loc)
        sep = "&" if u.query else ""
        path = f"{u.path}?{u.query}{sep}digest={urllib.parse.quote(digest)}"
        st, _, body = self.request(
            "PUT", path, body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )
        if st != 201:
            raise RuntimeError(f"upload {repo} {digest}: {st} {body[:200]!r}")
        return "uploaded"

    def put_manifest(self, repo, ref, data):
        st, _, body = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", body=data,
            headers={"Content-Type": MT_MANIFEST, "Content-Length": str(len(data))},
        )
        if st != 201:
            raise RuntimeError(f"manifest {repo}:{ref}: {st} {body[:300]!r}")

    def has_manifest(self, repo, digest):
        st, _, _ = self.request("HEAD", f"/v2/{repo}/manifests/{digest}", headers={"Accept": MT_MANIFEST})
        return st == 200


def prepare_images(args, reg):
    """Builds and pushes the image set, or reuses it when the registry already has it (same seed,
    count and scale). Returns the list of images: dict(repo, ref, digest, blobs={digest: size})."""
    cache_dir = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                             "imagebloat-testenv", "scale-bench")
    os.makedirs(cache_dir, exist_ok=True)
    key = f"images-{args.images}-s{args.seed}-x{args.layer_scale:g}-{reg.host.replace(':', '_')}.json"
    cache = os.path.join(cache_dir, key)
    if os.path.exists(cache):
        with open(cache) as f:
            images = json.load(f)
        if all(reg.has_manifest(im["repo"], im["digest"]) for im in images):
            log(f"reusing {len(images)} images already in the registry ({cache})")
            return images
    t = time.time()
    plan = image_plan(args.images, args.layer_scale)
    built = {}  # layer name -> (digest, diff_id, size, first repo)
    lock = threading.Lock()
    layer_locks = collections.defaultdict(threading.Lock)
    stats = collections.Counter()

    def layer(spec, repo):
        with lock:
            llock = layer_locks[spec.name]
        with llock:  # a shared layer is built once; the other images mount it
            with lock:
                known = built.get(spec.name)
            if known is None:
                gz, diff_id, digest = build_layer(spec, args.seed)
                outcome = reg.push_blob(repo, digest, gz)
                with lock:
                    built[spec.name] = known = (digest, diff_id, len(gz), repo)
                    stats[outcome] += 1
                return known
        outcome = reg.mount_blob(repo, known[0], known[3])
        with lock:
            stats[outcome] += 1
        return known

    def push_image(i, layers):
        repo = f"{REPO_PREFIX}/app-{i:02d}"
        descs = [layer(spec, repo) for spec in layers]
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Cmd": [f"/app/{i}/bin/service-0"]},
            "rootfs": {"type": "layers", "diff_ids": [d[1] for d in descs]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": s.created_by} for s in layers],
        }
        cfg = json.dumps(config, sort_keys=True).encode()
        cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
        reg.push_blob(repo, cfg_digest, cfg)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cfg_digest, "size": len(cfg)},
            "layers": [{"mediaType": MT_LAYER, "digest": d[0], "size": d[2]} for d in descs],
        }
        mbytes = json.dumps(manifest, indent=2).encode()
        digest = "sha256:" + hashlib.sha256(mbytes).hexdigest()
        reg.put_manifest(repo, TAG, mbytes)
        blobs = {d[0]: d[2] for d in descs}
        blobs[cfg_digest] = len(cfg)
        return {"repo": repo, "ref": f"{reg.host}/{repo}:{TAG}", "digest": digest, "blobs": blobs,
                "layers": len(descs), "manifest_bytes": len(mbytes)}

    # Shared layers first (one image per base/runtime), so later images mount instead of rebuilding.
    images = [None] * len(plan)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first = {}
        for i, layers in enumerate(plan):
            for spec in layers[:-1]:
                first.setdefault(spec.name, i)
        lead = sorted(set(first.values()))
        for i, im in zip(lead, pool.map(lambda i: push_image(i, plan[i]), lead)):
            images[i] = im
        rest = [i for i in range(len(plan)) if images[i] is None]
        for i, im in zip(rest, pool.map(lambda i: push_image(i, plan[i]), rest)):
            images[i] = im
    with open(cache, "w") as f:
        json.dump(images, f)
    log(f"built and pushed {len(images)} images in {time.time() - t:.1f}s "
        f"(blobs: {dict(stats)})")
    return images


# --------------------------------------------------------------------------------------------------
# Kubernetes API: direct HTTPS with the admin token, one keep-alive connection per thread.
# --------------------------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status, body, what):
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.status = status


class Kube:
    def __init__(self, server, token, ca):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port or 443
        self.token = token
        self.ctx = ssl.create_default_context(cafile=ca)
        self.local = threading.local()
        self.requests = collections.Counter()
        self.lock = threading.Lock()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
        return c

    def raw(self, method, path, body=None, content_type="application/json"):
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            headers["Content-Type"] = content_type
        for attempt in range(6):
            try:
                c = self.conn()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                self.local.c = None
                if attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            if (r.status == 429 or r.status >= 500) and attempt < 5:
                time.sleep(0.2 * (attempt + 1))
                continue
            with self.lock:
                self.requests[method] += 1
            return r.status, data
        return r.status, data

    def call(self, method, path, body=None, content_type="application/json", ok=(200, 201, 202)):
        status, data = self.raw(method, path, body, content_type)
        if status not in ok:
            raise ApiError(status, data.decode(errors="replace"), f"{method} {path}")
        return json.loads(data) if data else None

    def get(self, path):
        return self.call("GET", path)

    def count(self, path):
        """Number of objects in a list, without transferring them (limit=1 + remainingItemCount)."""
        sep = "&" if "?" in path else "?"
        d = self.get(f"{path}{sep}limit=1")
        return len(d.get("items") or []) + int(d["metadata"].get("remainingItemCount") or 0)

    def list_all(self, path, page=500):
        items, cont = [], None
        while True:
            sep = "&" if "?" in path else "?"
            q = f"{path}{sep}limit={page}" + (f"&continue={urllib.parse.quote(cont)}" if cont else "")
            d = self.get(q)
            items += d.get("items") or []
            cont = d["metadata"].get("continue")
            if not cont:
                return items

    def metrics(self):
        try:
            status, data = self.raw("GET", "/metrics")
        except OSError:
            return ""
        return data.decode() if status == 200 else ""


def apiserver_writes(text, resource):
    """Non-read requests for a resource, by (verb, subresource, code), from apiserver_request_total."""
    out = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{") or f'resource="{resource}"' not in line:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") in ("GET", "LIST", "WATCH", "WATCHLIST", "CONNECT"):
            continue
        out[(labels.get("verb"), labels.get("subresource", ""), labels.get("code"))] += float(line.rsplit(" ", 1)[1])
    return out


def apiserver_gets(text, resources):
    """Single-object GET requests (not LIST or WATCH) per resource, from apiserver_request_total."""
    out = collections.Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") == "GET" and labels.get("resource") in resources and not labels.get("subresource"):
            out[labels["resource"]] += float(line.rsplit(" ", 1)[1])
    return out


# The objects only the operator reads one by one: pull credentials, and workloads it checks still exist.
OPERATOR_READS = ("serviceaccounts", "secrets", "deployments")


# --------------------------------------------------------------------------------------------------
# The operator process and its observation.
# --------------------------------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(addr, path, timeout=5):
    h, p = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def scrape(addr):
    try:
        st, body = http_get(addr, "/metrics")
        return body if st == 200 else ""
    except OSError:
        return ""


def metric_sum(text, name, **labels):
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if rest and rest[0] not in "{ ":
            continue
        lab = dict(re.findall(r'(\w+)="([^"]*)"', rest.split("}")[0])) if rest.startswith("{") else {}
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(rest.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def metric_by(text, name, label):
    out = collections.Counter()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            lab = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):].split("}")[0]))
            out[lab.get(label, "")] += float(line.rsplit(" ", 1)[1])
    return out


class ProcWatch(threading.Thread):
    """Samples the operator's memory and CPU once a second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.hwm_kib = 0
        self.rss_kib = 0
        self.peak_rss_kib = 0
        self.peak_at = None
        self.cpu_s = 0.0
        self.threads = 0
        self.stop_flag = threading.Event()
        self.samples = []  # (t, rss_kib, cpu_s)

    def sample(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                st = f.read()
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
        except OSError:
            return False
        m = re.search(r"VmHWM:\s+(\d+)", st)
        r = re.search(r"VmRSS:\s+(\d+)", st)
        th = re.search(r"Threads:\s+(\d+)", st)
        if m:
            self.hwm_kib = max(self.hwm_kib, int(m.group(1)))
        if r:
            self.rss_kib = int(r.group(1))
            if self.rss_kib > self.peak_rss_kib:
                self.peak_rss_kib = self.rss_kib
                self.peak_at = time.time()
        if th:
            self.threads = int(th.group(1))
        fields = stat.rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        self.cpu_s = (int(fields[11]) + int(fields[12])) / tick
        self.samples.append((time.time(), self.rss_kib, self.cpu_s))
        return True

    def run(self):
        while not self.stop_flag.wait(1.0):
            if not self.sample():
                return


class Operator:
    def __init__(self, binary, namespace, registry, log_path, extra):
        self.metrics_addr = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        args = [binary, "run", "--metrics-addr", self.metrics_addr, "--insecure-registry", registry,
                "--namespaces", namespace] + extra
        e = dict(os.environ)
        e.setdefault("IMAGEBLOAT_LOG", "info")
        self.logf = open(log_path, "wb")
        log(f"starting operator: {' '.join(args)} (IMAGEBLOAT_LOG={e['IMAGEBLOAT_LOG']}, log {log_path})")
        self.started = time.time()
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT, env=e,
                                     stdin=subprocess.DEVNULL)
        self.watch = ProcWatch(self.proc.pid)
        self.watch.sample()
        self.watch.start()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if http_get(self.metrics_addr, "/readyz", timeout=2)[0] == 200:
                    return time.time() - self.started
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not ready within {timeout}s; see {self.log_path}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.watch.sample()
        self.watch.stop_flag.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()


def summarize_log(path, limit=12):
    """Counts log lines by level and the distinct warn/error messages (numbers and hashes masked)."""
    levels = collections.Counter()
    msgs = collections.Counter()
    examples = {}
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return levels, []
    for raw in lines:
        line = ansi.sub("", raw.rstrip("\n"))
        m = re.search(r"\b(TRACE|DEBUG|INFO|WARN|ERROR)\b", line)
        lvl = m.group(1) if m else "OTHER"
        levels[lvl] += 1
        if lvl in ("WARN", "ERROR", "OTHER"):
            body = line[m.end():] if m else line
            key = re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", body)
            key = re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", "UID", key)
            key = re.sub(r"\d+", "N", key)[:220]
            msgs[(lvl, key)] += 1
            examples.setdefault((lvl, key), line[:400])
    top = [(lvl, n, examples[(lvl, k)]) for (lvl, k), n in msgs.most_common(limit)]
    return levels, top


# --------------------------------------------------------------------------------------------------
# Registry access log.
# --------------------------------------------------------------------------------------------------

ACCESS = re.compile(r'"(GET|HEAD) /v2/(\S+?)/(blobs|manifests)/(\S+?) HTTP/[\d.]+" (\d{3}) (\d+|-)')


def registry_served(log_path, offset, prefix):
    """Blob and manifest bytes the registry sent for repositories under prefix, from offset on."""
    blob_bytes = 0
    manifest_bytes = 0
    gets = collections.Counter()
    bytes_by_digest = collections.Counter()
    statuses = collections.Counter()
    with open(log_path, "rb") as f:
        f.seek(offset)
        data = f.read().decode(errors="replace")
    for line in data.splitlines():
        m = ACCESS.search(line)
        if not m or not m.group(2).startswith(prefix + "/"):
            continue
        method, repo, kind, ref, status, size = m.groups()
        if kind == "manifests":
            kind += "(digest)" if ref.startswith("sha256:") else "(tag)"
        statuses[(method, kind, status)] += 1
        if method != "GET" or size == "-":
            continue
        if kind == "blobs":
            blob_bytes += int(size)
            gets[ref] += 1
            bytes_by_digest[ref] += int(size)
        else:
            manifest_bytes += int(size)
    return blob_bytes, manifest_bytes, gets, bytes_by_digest, statuses


# --------------------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------------------

def main():
    global T0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--operator", required=True, help="the imagebloat binary")
    ap.add_argument("--workloads", type=int, default=500)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--workers", type=int, default=16, help="threads playing the kubelet")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds to wait for every report")
    ap.add_argument("--settle", type=float, default=15,
                    help="seconds to keep watching once every Pod runs and every report is Ready (late writes, "
                         "memory with every Pod cached)")
    ap.add_argument("--seed", default="imagebloat-scale-1")
    ap.add_argument("--layer-scale", type=float, default=1.0, help="multiplies every file size")
    ap.add_argument("--namespace", default=None)
    ap.add_argument("--keep", action="store_true", help="leave the namespace and Nodes in place")
    ap.add_argument("--results", default=None, help="write the results as JSON here")
    ap.add_argument("--operator-arg", action="append", default=[], help="extra flag for `imagebloat run`")
    ap.add_argument("--mem-target-mib", type=float, default=200)
    ap.add_argument("--ratio-target", type=float, default=1.05)
    args = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    registry = env("IMAGEBLOAT_TEST_REGISTRY")
    reg_log = env("IMAGEBLOAT_TEST_REGISTRY_LOG")
    kube = Kube(env("IMAGEBLOAT_TEST_KUBE_SERVER"), env("IMAGEBLOAT_TEST_KUBE_TOKEN"), env("IMAGEBLOAT_TEST_KUBE_CA"))
    kubectl = env("IMAGEBLOAT_TEST_KUBECTL")
    ns = args.namespace or f"scalebench-{int(time.time()) % 100000}"
    nodes = [f"scalebench-node-{n}" for n in range(args.nodes)]
    workdir = os.environ.get("SCALE_BENCH_WORKDIR") or f"/tmp/imagebloat-scale-bench-{os.getpid()}"
    os.makedirs(workdir, exist_ok=True)
    n_pods = args.workloads * args.replicas
    log(f"{n_pods} pods in {args.workloads} deployments x {args.replicas} replicas over {args.images} images; "
        f"namespace {ns}; operator {args.operator}; work dir {workdir}")

    reg = Registry(registry)
    images = prepare_images(args, reg)
    unique_blobs = {}
    for im in images:
        unique_blobs.update(im["blobs"])
    unique_bytes = sum(unique_blobs.values())
    layers_per_image = collections.Counter(im["layers"] for im in images)
    log(f"{len(images)} images, {len(unique_blobs)} unique blobs, {human(unique_bytes)} unique blob bytes; "
        f"layers per image {dict(sorted(layers_per_image.items()))}; "
        f"sum of image sizes {human(sum(sum(im['blobs'].values()) for im in images))}")

    # --- cluster objects that exist before the operator starts ----------------------------------
    crd = subprocess.run([args.operator, "crd"], check=True, capture_output=True).stdout
    subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "--field-manager", "imagebloat-scale-bench",
                    "-f", "-"], input=crd, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/imagereports.imagebloat.dev"], check=True, stdout=subprocess.DEVNULL)
    kube.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    deadline = time.time() + 60
    while kube.raw("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default")[0] != 200:
        if time.time() > deadline:
            sys.exit("scale-bench: the namespace's default ServiceAccount did not appear within 60s")
        time.sleep(0.3)
    for n in nodes:
        st, _ = kube.raw("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": n, "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                                  "imagebloat.dev/scale-bench": "true"}}})
        if st not in (201, 409):
            sys.exit(f"scale-bench: create node {n}: HTTP {st}")
        kube.call("PATCH", f"/api/v1/nodes/{n}/status", {"status": {"nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "osImage": "",
            "systemUUID": ""}}}, content_type="application/merge-patch+json")

    before = kube.metrics()
    api_before = apiserver_writes(before, "imagereports")
    reads_before = apiserver_gets(before, OPERATOR_READS)
    reg_offset = os.path.getsize(reg_log)
    op = Operator(args.operator, ns, registry, os.path.join(workdir, "operator.log"), args.operator_arg)
    results = {"namespace": ns, "pods": n_pods, "workloads": args.workloads, "images": len(images)}
    interrupted = False
    try:
        ready_s = op.wait_ready()
        op.watch.sample()
        results["operator_ready_s"] = ready_s
        results["rss_at_ready_kib"] = op.watch.rss_kib
        log(f"operator ready after {ready_s:.1f}s (metrics on {op.metrics_addr}); "
            f"RSS {op.watch.rss_kib / 1024:.1f} MiB")
        results.update(run_bench(args, kube, ns, nodes, images, op))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted")
    finally:
        op.watch.sample()
        final_metrics = scrape(op.metrics_addr) if op.alive() else ""
        alive = op.alive()
        op.stop()
        time.sleep(1)  # the registry writes its access log line when a response completes
        after = kube.metrics()
        api_after = apiserver_writes(after, "imagereports")
        reads_after = apiserver_gets(after, OPERATOR_READS)
        if args.keep:
            pass
        elif results.get("timeline", {}).get("api_server_lost"):
            log("API server lost: no cleanup")
        else:
            cleanup(kube, ns, nodes)
        if args.keep:
            log(f"--keep: namespace {ns} and nodes {nodes} left in place")
    if interrupted:
        sys.exit(130)

    # --- figures ---------------------------------------------------------------------------------
    w = args.workloads
    written = metric_by(final_metrics, "imagebloat_reports_written_total", "result")
    report_writes = sum(written.values())
    api_delta = collections.Counter()
    for k, v in api_after.items():
        api_delta[k] = v - api_before.get(k, 0)
    api_writes = sum(v for v in api_delta.values() if v > 0)
    reads = {k: int(reads_after.get(k, 0) - reads_before.get(k, 0)) for k in OPERATOR_READS}
    blob_served, manifest_served, gets, by_digest, statuses = registry_served(reg_log, reg_offset, REPO_PREFIX)
    ratio = blob_served / unique_bytes if unique_bytes else float("nan")
    dup = [(d, n, by_digest[d]) for d, n in gets.most_common() if n > 1]
    never = [d for d in unique_blobs if d not in gets]
    hwm_mib = op.watch.hwm_kib / 1024
    levels, top_msgs = summarize_log(op.log_path)
    t = results.get("timeline", {})

    def since(a, b):
        if t.get(a) is None or t.get(b) is None:
            return None
        return t[b] - t[a]

    all_ready = results.get("ready", 0) >= w
    to_ready = since("t0", "all_ready") if all_ready else None
    from_first_patch = since("first_status_patch", "all_ready") if all_ready else None
    from_last_patch = since("last_status_patch", "all_ready") if all_ready else None

    print()
    print("=" * 78)
    print(f"imagebloat scale benchmark — {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"operator binary: {args.operator}")
    print("=" * 78)
    rows = []

    def row(name, value, target="", verdict=""):
        rows.append((name, value, target, verdict))

    def secs(v):
        return "—" if v is None else f"{v:.1f} s"

    row("pods", f"{results.get('pods_patched', 0)} / {n_pods} bound and running")
    row("workloads (Deployments)", f"{w}")
    row("images (distinct)", f"{len(images)} ({len(unique_blobs)} unique blobs, {human(unique_bytes)})")
    row("nodes", f"{len(nodes)}")
    row("operator start -> /readyz", secs(results.get("operator_ready_s")))
    row("deployments created", secs(since("t0", "deployments_created")))
    row("all pods created (controller-manager)", secs(since("t0", "all_pods_created")))
    row("all pods bound + status patched", secs(since("t0", "last_status_patch")))
    row("pod creation rate (controller-manager)",
        "—" if not since("t0", "all_pods_created") else f"{n_pods / since('t0', 'all_pods_created'):.1f} pods/s")
    row("first report exists", secs(since("t0", "first_report")))
    row("all reports exist", secs(since("t0", "all_reports")))
    row("time to all reports Ready (from T0)", secs(to_ready), f"{w} Ready", "PASS" if all_ready else "MISS")
    row("  from first Pod status patch", secs(from_first_patch))
    row("  from last Pod status patch (<0: before it)", secs(from_last_patch))
    row("reports/s (first status patch -> all Ready)",
        "—" if not from_first_patch else f"{w / from_first_patch:.2f}")
    for key, label in (("lag_first_pod_to_ready_s", "per workload: first Pod created -> report Ready"),
                       ("lag_first_status_patch_to_ready_s", "per workload: first status patch -> report Ready")):
        lag = results.get(key) or {}
        if lag:
            row(label + " (p50/p90/p99/max)", " / ".join(f"{lag[p]:.2f}" for p in (50, 90, 99, 100)) + " s")
    pct = results.get("ready_percentiles_s") or {}
    if pct:
        row("report Ready at (p10/p50/p90/p100 from T0)", " / ".join(f"{pct[p]:.0f}" for p in (10, 50, 90, 100)) + " s")
    row("reports Ready / exist", f"{results.get('ready', 0)} / {results.get('reports', 0)}")
    row("reports with the expected digest", f"{results.get('digest_ok', 0)} / {results.get('reports', 0)}")
    wpw = report_writes / w if w else float("nan")
    row("report writes per workload (metric)",
        f"{wpw:.2f} ({int(report_writes)} writes: {dict((k, int(v)) for k, v in written.items())})",
        "~1", "PASS" if report_writes and wpw <= 1.0 + 1e-9 else ("MISS" if report_writes else "?"))
    row("API write requests per workload (apiserver)",
        f"{api_writes / w:.2f} ({int(api_writes)} for imagereports, all clients)", "~2 (apply + status)")
    row("API single-object reads per workload (GET)",
        f"{sum(reads.values()) / w:.2f} ({', '.join(f'{k} {v}' for k, v in reads.items())})")
    row("operator peak memory (VmHWM)", f"{hwm_mib:.1f} MiB", f"<= {args.mem_target_mib:.0f} MiB",
        "PASS" if hwm_mib <= args.mem_target_mib else "MISS")
    row("operator CPU time", f"{op.watch.cpu_s:.1f} s")
    if results.get("load_mean") is not None:
        row("machine load (1-min avg) during the run", f"mean {results['load_mean']:.1f}, max {results['load_max']:.1f} "
            f"on {os.cpu_count()} CPUs")
    row("registry blob bytes served", f"{human(blob_served)} ({blob_served} B, {sum(gets.values())} GETs)")
    row("unique blob bytes pushed", f"{human(unique_bytes)} ({unique_bytes} B)")
    row("served / unique ratio", f"{ratio:.3f}x", f"<= {args.ratio_target:.2f}x",
        "PASS" if ratio <= args.ratio_target else "MISS")
    row("manifest bytes served", human(manifest_served))
    wn = max(len(r[0]) for r in rows)
    wv = max(len(r[1]) for r in rows)
    wt = max(len(r[2]) for r in rows)
    for name, value, target, verdict in rows:
        print(f"{name:<{wn}}  {value:<{wv}}  {target:<{wt}}  {verdict}")
    print("-" * 78)
    print("operator metrics at the end:")
    for name, label in [("imagebloat_analyses_total", "result"), ("imagebloat_cache_hits_total", "cache"),
                        ("imagebloat_reconcile_errors_total", "reason"),
                        ("imagebloat_registry_requests_total", "status")]:
        print(f"  {name}: {dict((k, int(v)) for k, v in metric_by(final_metrics, name, label).items())}")
    dl = metric_sum(final_metrics, "imagebloat_registry_bytes_downloaded_total")
    print(f"  imagebloat_registry_bytes_downloaded_total: {int(dl) if dl is not None else '—'}")
    cnt = metric_sum(final_metrics, "imagebloat_analysis_duration_seconds_count")
    tot = metric_sum(final_metrics, "imagebloat_analysis_duration_seconds_sum")
    if cnt:
        print(f"  analysis duration: {int(cnt)} analyses, mean {tot / cnt:.2f} s")
    print(f"  operator alive at the end: {alive}; threads {op.watch.threads}; "
          f"RSS at end {op.watch.rss_kib / 1024:.1f} MiB; peak sampled RSS {op.watch.peak_rss_kib / 1024:.1f} MiB"
          + (f" at +{op.watch.peak_at - T0:.0f}s" if op.watch.peak_at and T0 else ""))
    hits = metric_by(final_metrics, "imagebloat_cache_hits_total", "cache").get("image", 0)
    done_analyses = sum(metric_by(final_metrics, "imagebloat_analyses_total", "result").values())
    print(f"container analyses requested (image cache hits + analyses; one per container per reconcile): "
          f"{int(hits + done_analyses)} = {(hits + done_analyses) / w:.1f} per workload")
    if results.get("pod_json_bytes_mean"):
        print(f"Pod object size (JSON, sample of 50): mean {human(results['pod_json_bytes_mean'])}, of which "
              f"managedFields {human(results['pod_managed_fields_bytes_mean'])}")
    mark = t.get("rss_mark")
    if mark and results.get("pods_seen", 0) > mark[0]:
        print(f"operator RSS growth per Pod: {(op.watch.rss_kib - mark[1]) / (results['pods_seen'] - mark[0]):.1f} KiB "
              f"(from {mark[0]} Pods at {mark[1] / 1024:.0f} MiB to {results['pods_seen']} at "
              f"{op.watch.rss_kib / 1024:.0f} MiB)")
    print(f"report watch events per report (ADDED+MODIFIED; 2 = create + one status): "
          f"{results.get('report_watch_events_histogram')}; mean status size "
          f"{human(results.get('report_status_bytes_mean', 0))}")
    if results.get("kubelet_retries"):
        print(f"kubelet-play retries: {results['kubelet_retries']}")
    print(f"apiserver imagereports writes during the run: "
          f"{dict(((v, s or '-', c), int(n)) for (v, s, c), n in api_delta.items() if n)}")
    print(f"registry requests for {REPO_PREFIX}/*: {dict(('/'.join(k), v) for k, v in sorted(statuses.items()))}")
    if dup:
        print(f"blobs fetched more than once: {len(dup)}; top: " +
              ", ".join(f"{d[7:19]}… x{n} ({human(b)})" for d, n, b in dup[:8]))
    if never:
        print(f"blobs never fetched: {len(never)}")
    print(f"operator log: {op.log_path}: lines by level {dict(levels)}")
    for lvl, n, example in top_msgs:
        print(f"  {n:6d} x {example}")
    print("=" * 78)

    results.update({
        "time_to_all_ready_s": to_ready, "from_first_status_patch_s": from_first_patch,
        "from_last_status_patch_s": from_last_patch,
        "report_writes": report_writes, "report_writes_per_workload": wpw,
        "apiserver_writes": api_writes, "apiserver_reads": reads, "operator_hwm_mib": hwm_mib, "operator_cpu_s": op.watch.cpu_s,
        "registry_blob_bytes_served": blob_served, "unique_blob_bytes": unique_bytes, "ratio": ratio,
        "duplicate_blob_fetches": len(dup), "log_levels": dict(levels),
        "memory_samples": [(round(s[0] - (T0 or s[0]), 1), s[1], s[2]) for s in op.watch.samples],
    })
    path = args.results or os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"results: {path}")
    ok = all_ready and hwm_mib <= args.mem_target_mib and ratio <= args.ratio_target
    sys.exit(0 if ok else 1)


class Watcher(threading.Thread):
    """List then watch a collection, calling on_event(type, obj) for every object (the list's items
    as ADDED); relists when the watch expires. One connection of its own."""

    def __init__(self, kube, path, on_event, stop):
        super().__init__(daemon=True)
        self.kube, self.path, self.on_event, self.stop = kube, path, on_event, stop
        self.errors = 0
        self.synced = threading.Event()
        self.failing_since = None  # first failure of the current streak

    def run(self):
        k = self.kube
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    items, cont = [], None
                    while True:
                        q = f"{self.path}?limit=500" + (f"&continue={urllib.parse.quote(cont)}" if cont else "")
                        d = k.get(q)
                        items += d.get("items") or []
                        cont = d["metadata"].get("continue")
                        if not cont:
                            break
                    rv = d["metadata"]["resourceVersion"]
                    for o in items:
                        self.on_event("ADDED", o)
                    self.synced.set()
                c = http.client.HTTPSConnection(k.host, k.port, context=k.ctx, timeout=90)
                c.request("GET", f"{self.path}?watch=1&allowWatchBookmarks=true&timeoutSeconds=60"
                                 f"&resourceVersion={rv}",
                          headers={"Authorization": f"Bearer {k.token}", "Accept": "application/json"})
                r = c.getresponse()
                if r.status != 200:
                    r.read()
                    rv = None
                    time.sleep(1)
                    continue
                self.failing_since = None
                while not self.stop.is_set():
                    line = r.readline()
                    if not line:
                        break
                    e = json.loads(line)
                    t, o = e["type"], e["object"]
                    if t == "ERROR":
                        rv = None  # 410 Gone: relist
                        break
                    rv = o["metadata"]["resourceVersion"]
                    if t != "BOOKMARK":
                        self.on_event(t, o)
                c.close()
            except Exception as e:  # a dropped watch: resume from the last resourceVersion
                self.errors += 1
                if self.failing_since is None:
                    self.failing_since = time.time()
                if self.errors < 5 or self.errors % 50 == 0:
                    log(f"watch {self.path}: {type(e).__name__}: {e}")
                time.sleep(1)


def run_bench(args, kube, ns, nodes, images, op):
    global T0
    w, n_pods = args.workloads, args.workloads * args.replicas
    timeline = {}
    image_id = {}
    for im in images:
        image_id[im["ref"]] = f"{im['ref'].rsplit(':', 1)[0]}@{im['digest']}"
    expected_digest = {}

    def deployment(k):
        im = images[k % len(images)]
        name = f"wl-{k:03d}"
        expected_digest[f"deployment-{name}"] = im["digest"]
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "scale-bench"}},
            "spec": {
                "replicas": args.replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": im["ref"],
                                             "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                             "terminationGracePeriodSeconds": 0},
                },
            },
        }

    stop = threading.Event()
    slock = threading.Lock()
    st = {"patched": 0, "seen": set(), "submitted": set(), "errors": collections.Counter(),
          "first_patch": None, "last_patch": None, "last_pod_created": None,
          "wl_first_pod": {}, "wl_first_patch": {},
          # report name -> [ready, digest, reason, status bytes, events, became-ready time]
          "reports": {}}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers)
    node_i = [0]

    def kubelet(pod, node):
        name = pod["metadata"]["name"]
        for attempt in range(8):
            try:
                if attempt == 0 and not pod["spec"].get("nodeName"):
                    code, data = kube.raw("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", {
                        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
                    if code == 404:
                        return  # deleted meanwhile
                    if code not in (201, 409):
                        raise ApiError(code, data.decode(errors="replace"), "bind")
                now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                statuses = [{"name": c["name"], "image": c["image"], "imageID": image_id[c["image"]],
                             "ready": True, "started": True, "restartCount": 0,
                             "state": {"running": {"startedAt": now}}}
                            for c in pod["spec"]["containers"]]
                conditions = [{"type": t, "status": "True", "lastTransitionTime": now}
                              for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
                body = {"status": {"phase": "Running", "startTime": now, "conditions": conditions,
                                   "containerStatuses": statuses}}
                code, data = kube.raw("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status", body,
                                      content_type="application/strategic-merge-patch+json")
                if code == 404:
                    return
                if code != 200:
                    raise ApiError(code, data.decode(errors="replace"), "status")
                t = time.time()
                with slock:
                    st["wl_first_patch"].setdefault(workload_of(name), t)
                    st["patched"] += 1
                    if st["first_patch"] is None:
                        st["first_patch"] = t
                    st["last_patch"] = t
                return
            except Exception as e:
                with slock:
                    st["errors"][f"{type(e).__name__}:{getattr(e, 'status', '')}"] += 1
                time.sleep(0.5 * (attempt + 1))

    def workload_of(pod_name):
        m = re.match(r"(wl-\d+)-", pod_name)
        return f"deployment-{m.group(1)}" if m else pod_name

    def on_pod(t, pod):
        if t == "DELETED" or stop.is_set():
            return
        name = pod["metadata"]["name"]
        with slock:
            if name not in st["seen"]:
                st["seen"].add(name)
                st["last_pod_created"] = time.time()
                st["wl_first_pod"].setdefault(workload_of(name), st["last_pod_created"])
            if pod["spec"].get("nodeName") or name in st["submitted"]:
                return
            st["submitted"].add(name)
            node = nodes[node_i[0] % len(nodes)]
            node_i[0] += 1
        try:
            pool.submit(kubelet, pod, node)
        except RuntimeError:  # shutting down
            pass

    def on_report(t, r):
        name = r["metadata"]["name"]
        with slock:
            if t == "DELETED":
                st["reports"].pop(name, None)
                return
            status = r.get("status") or {}
            c = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
            ready = bool(c and c.get("status") == "True")
            cs = status.get("containers") or []
            prev = st["reports"].get(name)
            events = (prev[4] + 1) if prev else 1
            ready_at = prev[5] if prev and prev[5] else (time.time() if ready else None)
            st["reports"][name] = [ready, cs[0].get("digest") if cs else None,
                                   (c or {}).get("reason", "no status"), len(json.dumps(status)), events, ready_at]

    pod_watch = Watcher(kube, f"/api/v1/namespaces/{ns}/pods", on_pod, stop)
    report_watch = Watcher(kube, f"/apis/imagebloat.dev/v1alpha1/namespaces/{ns}/imagereports", on_report, stop)
    pod_watch.start()
    report_watch.start()
    pod_watch.synced.wait(30)
    report_watch.synced.wait(30)

    T0 = time.time()
    timeline["t0"] = T0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as dpool:
        list(dpool.map(lambda k: kube.call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(k)),
                       range(w)))
    timeline["deployments_created"] = time.time()
    log(f"{w} deployments created in {timeline['deployments_created'] - T0:.1f}s")

    deadline = T0 + args.timeout
    last_print = 0
    load_at, loads = 0, []
    while True:
        now = time.time()
        with slock:
            seen, patched, errors = len(st["seen"]), st["patched"], dict(st["errors"])
            reports = dict(st["reports"])
            if seen >= n_pods and "all_pods_created" not in timeline:
                timeline["all_pods_created"] = st["last_pod_created"]
            if patched >= n_pods and "last_status_patch" not in timeline:
                timeline["last_status_patch"] = st["last_patch"]
        ready = sum(1 for v in reports.values() if v[0])
        if seen >= n_pods // 5 and "rss_mark" not in timeline:
            timeline["rss_mark"] = (seen, op.watch.rss_kib)  # for RSS per Pod: the slope from here
        if reports and "first_report" not in timeline:
            timeline["first_report"] = now
        if len(reports) >= w and "all_reports" not in timeline:
            timeline["all_reports"] = now
        if ready >= w and "all_ready" not in timeline:
            timeline["all_ready"] = max(v[5] for v in reports.values())
            log(f"every report is Ready ({w}); pods running {patched}/{n_pods}")
        done = ready >= w and patched >= n_pods
        if done and "settled" not in timeline:
            timeline["settle_from"] = now
            timeline["settled"] = now + args.settle
            log(f"every Pod runs and every report is Ready: watching {args.settle:.0f}s more for late writes")
        if now - last_print >= 10 or (done and now >= timeline["settled"]):
            last_print = now
            not_ready = collections.Counter(v[2] for v in reports.values() if not v[0])
            log(f"pods created {seen}/{n_pods}, running {patched}; reports {len(reports)}, Ready {ready}"
                + (f" (not Ready: {dict(not_ready)})" if not_ready else "")
                + f"; operator RSS {op.watch.rss_kib / 1024:.0f} MiB (HWM {op.watch.hwm_kib / 1024:.0f}), "
                  f"CPU {op.watch.cpu_s:.0f}s" + (f"; kubelet retries {errors}" if errors else ""))
        if done and now >= timeline["settled"]:
            break
        if not op.alive():
            log(f"operator exited with {op.proc.returncode}")
            break
        if now > deadline:
            log(f"timeout after {args.timeout:.0f}s")
            break
        down = [wt.failing_since for wt in (pod_watch, report_watch) if wt.failing_since]
        if len(down) == 2 and now - max(down) > 30:
            log("the API server has been unreachable for 30 s (restarted by someone else's "
                "`kube-testenv.sh up`?): giving up; use --private-env for a control plane of the bench's own")
            timeline["api_server_lost"] = now
            break
        if now - load_at >= 5:
            load_at = now
            loads.append(os.getloadavg()[0])
        time.sleep(0.5)

    stop.set()
    pool.shutdown(wait=True)
    # A last consistent look at the reports (the watch is the timing source, the list the truth).
    try:
        final = kube.list_all(f"/apis/imagebloat.dev/v1alpha1/namespaces/{ns}/imagereports")
    except Exception as e:
        log(f"final list of reports failed: {e}")
        final = []
    ready = digest_ok = 0
    not_ready = collections.Counter()
    for r in final:
        status = r.get("status") or {}
        c = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if c and c.get("status") == "True":
            ready += 1
        else:
            not_ready[(c or {}).get("reason", "no status")] += 1
        cs = status.get("containers") or []
        if cs and cs[0].get("digest") == expected_digest.get(r["metadata"]["name"]):
            digest_ok += 1
    timeline["first_status_patch"] = st["first_patch"]

    def pctl(values):
        v = sorted(values)
        return {p: v[min(len(v) - 1, int(len(v) * p / 100))] for p in (50, 90, 99, 100)} if v else {}
    lag_pod = [st["reports"][r][5] - t for r, t in st["wl_first_pod"].items()
               if r in st["reports"] and st["reports"][r][5]]
    lag_patch = [st["reports"][r][5] - t for r, t in st["wl_first_patch"].items()
                 if r in st["reports"] and st["reports"][r][5]]
    # Pod objects as the operator receives them (sizes explain the operator's memory per Pod).
    pod_json = pod_managed = 0
    try:
        sample = kube.get(f"/api/v1/namespaces/{ns}/pods?limit=50")["items"]
        pod_json = sum(len(json.dumps(p)) for p in sample) / len(sample)
        pod_managed = sum(len(json.dumps(p["metadata"].get("managedFields") or [])) for p in sample) / len(sample)
    except Exception as e:
        log(f"pod sample failed: {e}")
    ready_times = sorted(v[5] - T0 for v in st["reports"].values() if v[5])
    events = collections.Counter(v[4] for v in st["reports"].values())
    return {"timeline": timeline, "pods_patched": st["patched"], "pods_seen": len(st["seen"]),
            "load_mean": sum(loads) / len(loads) if loads else None, "load_max": max(loads) if loads else None,
            "reports": len(final), "ready": ready, "digest_ok": digest_ok, "not_ready": dict(not_ready),
            "kubelet_retries": dict(st["errors"]),
            "lag_first_pod_to_ready_s": pctl(lag_pod), "lag_first_status_patch_to_ready_s": pctl(lag_patch),
            "pod_json_bytes_mean": pod_json, "pod_managed_fields_bytes_mean": pod_managed,
            "report_watch_events_histogram": dict(sorted(events.items())),
            "ready_percentiles_s": {p: ready_times[min(len(ready_times) - 1, int(len(ready_times) * p / 100))]
                                    for p in (10, 50, 90, 100)} if ready_times else {},
            "report_status_bytes_mean": (sum(len(json.dumps(r.get("status") or {})) for r in final) / len(final))
            if final else 0}


def cleanup(kube, ns, nodes):
    """Deletes the bench's Deployments, Pods (grace 0: no kubelet finishes them), namespace and Nodes."""
    log(f"cleaning up namespace {ns}")
    t = time.time()
    try:
        kube.raw("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments", {"propagationPolicy": "Background"})
        kube.raw("DELETE", f"/api/v1/namespaces/{ns}", {"propagationPolicy": "Background"})
        deadline = time.time() + 300
        while time.time() < deadline:
            kube.raw("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0",
                     {"gracePeriodSeconds": 0, "propagationPolicy": "Background"})
            st, _ = kube.raw("GET", f"/api/v1/namespaces/{ns}")
            if st == 404:
                break
            time.sleep(3)
        else:
            log(f"namespace {ns} still terminating after 300s; left for the namespace controller")
        for n in nodes:
            kube.raw("DELETE", f"/api/v1/nodes/{n}")
        log(f"cleaned up in {time.time() - t:.1f}s")
    except Exception as e:
        log(f"cleanup failed: {e}")


if __name__ == "__main__":
    main()

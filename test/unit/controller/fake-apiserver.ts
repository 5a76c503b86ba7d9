// A STAND-IN for the Kubernetes API server: no real API server (etcd, kube-apiserver) can
// run in this environment, so the controller's Kubernetes source is tested against this
// small HTTP server that speaks the parts of the real protocol the controller relies on:
//   - collections under /api/v1/... and /apis/<group>/<version>/..., namespaced or not;
//   - list with metadata.resourceVersion and limit/continue pagination, items without kind;
//   - watch (?watch=1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S):
//     newline-delimited JSON events after N, BOOKMARK events, and for a compacted N an
//     ERROR event with a 410 Status (what kube-apiserver sends for "too old resource version");
//   - create (POST, 409 on exists), replace (PUT, 409 on a stale resourceVersion), merge
//     patch (PATCH with content-type application/merge-patch+json, else 415; also on
//     /status), delete; bearer-token authentication (401), over TLS when given a certificate;
//   - TokenReview (POST /apis/authentication.k8s.io/v1/tokenreviews): answers what the test
//     set for the reviewed token, unauthenticated otherwise;
//   - test hooks: drop every open watch, compact history, fail the next N watches, change the
//     accepted bearer tokens (rotation), see the last Authorization header.
// The client under test is @kubernetes/client-node (through src/controller/kube/client.ts).
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';

type Obj = Record<string, unknown> & { metadata?: Record<string, unknown> };

interface Parsed {
  collection: string; // apiVersion/plural
  apiVersion: string;
  plural: string;
  namespace?: string;
  name?: string;
  sub?: string;
}

interface Watcher {
  collection: string;
  namespace?: string;
  res: http.ServerResponse;
}

interface HistoryEvent {
  rv: number;
  collection: string;
  namespace?: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: Obj;
}

const KIND_OF: Record<string, string> = {
  namespaces: 'Namespace',
  nodes: 'Node',
  pods: 'Pod',
  services: 'Service',
  serviceaccounts: 'ServiceAccount',
  endpointslices: 'EndpointSlice',
  events: 'Event',
  secrets: 'Secret',
  configmaps: 'ConfigMap',
  customresourcedefinitions: 'CustomResourceDefinition',
  leases: 'Lease',
  httproutes: 'HTTPRoute',
  grpcroutes: 'GRPCRoute',
  authorizationpolicies: 'AuthorizationPolicy',
  peerauthentications: 'PeerAuthentication',
  backendtrafficpolicies: 'BackendTrafficPolicy',
};

function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> = target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as object) } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export interface TokenReviewAnswer {
  authenticated: boolean;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

export class FakeApiServer {
  /** Bearer tokens the stand-in accepts (a rotated token stays valid for a while, as in Kubernetes). */
  readonly tokens = new Set<string>();
  /** What TokenReview answers per reviewed token. */
  readonly tokenReviews = new Map<string, TokenReviewAnswer>();
  /** The Authorization header of the last request (authorised or not). */
  lastAuthorization: string | undefined;
  private server: http.Server;
  private rv = 100;
  /** collection -> "ns/name" -> object */
  private readonly data = new Map<string, Map<string, Obj>>();
  private history: HistoryEvent[] = [];
  /** Events at or below this rv were compacted away. */
  private compactedTo = 0;
  private watchers = new Set<Watcher>();
  private failWatches = 0;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  readonly counts = { lists: 0, watches: 0, gones: 0, bookmarks: 0, unauthorized: 0, connections: 0 };
  readonly requests: { method: string; path: string; body?: unknown }[] = [];
  port = 0;
  private readonly scheme: string;

  constructor(opts: { token?: string; bookmarkMs?: number; tls?: { cert: string; key: string } } = {}) {
    this.tokens.add(opts.token ?? `stand-in-${process.pid}`);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) : http.createServer(handler);
    this.scheme = opts.tls ? 'https' : 'http';
    // Connections (TLS handshakes when over TLS): a client that reuses them opens few.
    this.server.on(opts.tls ? 'secureConnection' : 'connection', () => this.counts.connections++);
    if (opts.bookmarkMs) {
      this.bookmarkTimer = setInterval(() => this.bookmarks(), opts.bookmarkMs);
      this.bookmarkTimer.unref();
    }
  }

  /** The first accepted token. */
  get token(): string {
    return [...this.tokens][0] ?? '';
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return `${this.scheme}://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Ends every open watch abruptly (a dropped connection / apiserver restart). */
  dropWatches(): void {
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
  }

  /** Forgets history: watches from an older resourceVersion now get 410 Gone. */
  compact(): void {
    this.compactedTo = this.rv;
    this.history = [];
  }

  failNextWatches(n: number): void {
    this.failWatches = n;
  }

  openWatches(): number {
    return this.watchers.size;
  }

  /** Sends a BOOKMARK with the current resourceVersion on every open watch. */
  bookmarks(): void {
    for (const w of this.watchers) {
      const [apiVersion, plural] = splitCollection(w.collection);
      this.counts.bookmarks++;
      w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { apiVersion, kind: KIND_OF[plural] ?? 'Object', metadata: { resourceVersion: String(this.rv) } } })}\n`);
    }
  }

  // ---- direct object access for tests (what kubectl would do) ----

  collectionOf(apiVersion: string, kind: string): string {
    const plural = Object.entries(KIND_OF).find(([, k]) => k === kind)?.[0];
    if (!plural) throw new Error(`stand-in: unknown kind ${kind}`);
    return `${apiVersion}/${plural}`;
  }

  apply(obj: Obj): Obj {
    const coll = this.collectionOf(String(obj.apiVersion), String(obj.kind));
    const m = obj.metadata ?? {};
    const key = `${m.namespace ?? ''}/${m.name}`;
    const exists = this.data.get(coll)?.has(key);
    return this.store(coll, key, structuredClone(obj), exists ? 'MODIFIED' : 'ADDED');
  }

  delete(apiVersion: string, kind: string, namespace: string | undefined, name: string): void {
    const coll = this.collectionOf(apiVersion, kind);
    const key = `${namespace ?? ''}/${name}`;
    const old = this.data.get(coll)?.get(key);
    if (!old) return;
    this.data.get(coll)!.delete(key);
    const rv = ++this.rv;
    const obj = { ...old, metadata: { ...old.metadata, resourceVersion: String(rv) } };
    this.record({ rv, collection: coll, namespace, type: 'DELETED', obj });
  }

  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): Obj | undefined {
    return this.data.get(this.collectionOf(apiVersion, kind))?.get(`${namespace ?? ''}/${name}`);
  }

  list(apiVersion: string, kind: string): Obj[] {
    return [...(this.data.get(this.collectionOf(apiVersion, kind))?.values() ?? [])];
  }

  private store(coll: string, key: string, obj: Obj, type: 'ADDED' | 'MODIFIED'): Obj {
    const rv = ++this.rv;
    const [apiVersion, plural] = splitCollection(coll);
    const prev = this.data.get(coll)?.get(key);
    obj.apiVersion = apiVersion;
    obj.kind = KIND_OF[plural] ?? obj.kind;
    obj.metadata = {
      ...obj.metadata,
      resourceVersion: String(rv),
      uid: obj.metadata?.uid ?? prev?.metadata?.uid ?? `uid-${rv}`,
      creationTimestamp: obj.metadata?.creationTimestamp ?? prev?.metadata?.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    const m = this.data.get(coll) ?? new Map<string, Obj>();
    this.data.set(coll, m);
    m.set(key, obj);
    const namespace = obj.metadata.namespace as string | undefined;
    this.record({ rv, collection: coll, namespace, type, obj });
    return obj;
  }

  private record(ev: HistoryEvent): void {
    this.history.push(ev);
    for (const w of this.watchers) {
      if (w.collection !== ev.collection || (w.namespace && w.namespace !== ev.namespace)) continue;
      w.res.write(`${JSON.stringify({ type: ev.type, object: ev.obj })}\n`);
    }
  }

  // ---- HTTP ----

  private handle(req: http.IncomingMessage, res: http.ServerResponse): undefined {
    const url = new URL(req.url ?? '/', 'http://x');
    this.lastAuthorization = req.headers.authorization;
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (bearer === undefined || !this.tokens.has(bearer)) {
      this.counts.unauthorized++;
      return this.status(res, 401, 'Unauthorized');
    }
    const p = parsePath(url.pathname);
    if (!p) return this.status(res, 404, `no such path ${url.pathname}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Obj | undefined;
      if (chunks.length) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Obj;
        } catch {
          return this.status(res, 400, 'bad JSON');
        }
      }
      this.requests.push({ method: req.method ?? '', path: url.pathname, body });
      if (req.method === 'PATCH' && !String(req.headers['content-type']).startsWith('application/merge-patch+json')) {
        return this.status(res, 415, `stand-in: only merge patches, got ${req.headers['content-type']}`);
      }
      if (req.method === 'POST' && p.collection === 'authentication.k8s.io/v1/tokenreviews' && body) {
        const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
        const answer = this.tokenReviews.get(String(spec.token)) ?? { authenticated: false };
        return this.json(res, 201, { ...body, status: { ...answer, ...(answer.authenticated ? {} : { error: 'invalid bearer token' }) } });
      }
      this.route(req.method ?? 'GET', p, url.searchParams, body, res);
    });
  }

  private route(method: string, p: Parsed, q: URLSearchParams, body: Obj | undefined, res: http.ServerResponse): undefined {
    const coll = this.data.get(p.collection) ?? new Map<string, Obj>();
    const key = `${p.namespace ?? ''}/${p.name}`;
    if (method === 'GET' && !p.name) {
      if (q.get('watch') === '1' || q.get('watch') === 'true') return this.watch(p, q, res);
      this.counts.lists++;
      const all = [...coll.values()].filter((o) => !p.namespace || o.metadata?.namespace === p.namespace);
      all.sort((a, b) => (String(a.metadata?.name) < String(b.metadata?.name) ? -1 : 1));
      const limit = Number(q.get('limit') ?? 0) || all.length || 1;
      const start = Number(q.get('continue') ?? 0) || 0;
      const page = all.slice(start, start + limit).map((o) => {
        // Real list items carry no apiVersion/kind.
        const { apiVersion: _a, kind: _k, ...rest } = o;
        return rest;
      });
      const more = start + limit < all.length;
      return this.json(res, 200, {
        apiVersion: p.apiVersion,
        kind: `${KIND_OF[p.plural] ?? 'Object'}List`,
        metadata: { resourceVersion: String(this.rv), ...(more ? { continue: String(start + limit) } : {}) },
        items: page,
      });
    }
    if (method === 'GET') {
      const o = coll.get(key);
      return o ? this.json(res, 200, o) : this.status(res, 404, `${p.plural} "${p.name}" not found`);
    }
    if (method === 'POST' && !p.name && body) {
      const name = String(body.metadata?.name ?? `${String(body.metadata?.generateName ?? 'obj-')}${this.rv + 1}`);
      const k = `${p.namespace ?? ''}/${name}`;
      if (coll.has(k)) return this.status(res, 409, `${p.plural} "${name}" already exists`);
      const obj = { ...body, metadata: { ...body.metadata, name, ...(p.namespace ? { namespace: p.namespace } : {}) } };
      return this.json(res, 201, this.store(p.collection, k, obj, 'ADDED'));
    }
    if (method === 'PUT' && p.name && body) {
      const old = coll.get(key);
      if (!old) return this.status(res, 404, `${p.plural} "${p.name}" not found`);
      const want = body.metadata?.resourceVersion;
      if (want !== undefined && want !== old.metadata?.resourceVersion) {
        return this.status(res, 409, 'Operation cannot be fulfilled: the object has been modified');
      }
      return this.json(res, 200, this.store(p.collection, key, { ...body }, 'MODIFIED'));
    }
    if (method === 'PATCH' && p.name && body) {
      const old = coll.get(key);
      if (!old) return this.status(res, 404, `${p.plural} "${p.name}" not found`);
      const patched = mergePatch(structuredClone(old), p.sub === 'status' ? { status: body.status } : body) as Obj;
      return this.json(res, 200, this.store(p.collection, key, patched, 'MODIFIED'));
    }
    if (method === 'DELETE' && p.name) {
      if (!coll.has(key)) return this.status(res, 404, 'not found');
      this.delete(p.apiVersion, KIND_OF[p.plural] ?? '', p.namespace, p.name);
      return this.json(res, 200, { kind: 'Status', status: 'Success' });
    }
    return this.status(res, 405, `${method} not supported here`);
  }

  private watch(p: Parsed, q: URLSearchParams, res: http.ServerResponse): undefined {
    this.counts.watches++;
    if (this.failWatches > 0) {
      this.failWatches--;
      return this.status(res, 500, 'stand-in: injected watch failure');
    }
    const from = Number(q.get('resourceVersion') ?? 0);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // kube-apiserver flushes a watch's headers at once, before any event.
    res.flushHeaders();
    if (from < this.compactedTo) {
      this.counts.gones++;
      res.end(
        `${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Expired', code: 410, message: `too old resource version: ${from} (${this.compactedTo})` } })}\n`,
      );
      return;
    }
    for (const ev of this.history) {
      if (ev.rv <= from || ev.collection !== p.collection || (p.namespace && p.namespace !== ev.namespace)) continue;
      res.write(`${JSON.stringify({ type: ev.type, object: ev.obj })}\n`);
    }
    const w: Watcher = { collection: p.collection, res, ...(p.namespace ? { namespace: p.namespace } : {}) };
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      if (timer) clearTimeout(timer);
      this.watchers.delete(w);
    });
  }

  private json(res: http.ServerResponse, code: number, body: unknown): undefined {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private status(res: http.ServerResponse, code: number, message: string): undefined {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', code, message });
  }
}

function splitCollection(c: string): [string, string] {
  const i = c.lastIndexOf('/');
  return [c.slice(0, i), c.slice(i + 1)];
}

function parsePath(path: string): Parsed | undefined {
  const segs = path.split('/').filter(Boolean);
  let apiVersion: string;
  let rest: string[];
  if (segs[0] === 'api' && segs[1]) {
    apiVersion = segs[1];
    rest = segs.slice(2);
  } else if (segs[0] === 'apis' && segs[1] && segs[2]) {
    apiVersion = `${segs[1]}/${segs[2]}`;
    rest = segs.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, sub] = rest;
  if (!plural) return undefined;
  return { collection: `${apiVersion}/${plural}`, apiVersion, plural, namespace, name, sub };
}

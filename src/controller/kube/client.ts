/**
 * A focused Kubernetes API client over node:http/https: JSON requests, paginated lists and
 * watches (newline-delimited JSON events). Bearer token (re-read from its file, since
 * projected service-account tokens rotate) and the cluster CA from the in-cluster files.
 * Only what the controller needs; no generated types.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { SkeinError } from '../../errors.js';
import { KubeCode } from '../codes.js';

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeClientOptions {
  /** API server URL, e.g. https://10.96.0.1:443 or http://127.0.0.1:8001. */
  server: string;
  token?: string;
  /** Re-read at most every `tokenReloadMs` (default 60 s). */
  tokenFile?: string;
  tokenReloadMs?: number;
  /** PEM of the cluster CA (or its file). */
  caPem?: string;
  caFile?: string;
  /** The controller's own namespace (leases, secrets, events). */
  namespace?: string;
  /** Per-request timeout for non-watch calls (ms). Default 30000. */
  timeoutMs?: number;
}

/** Options from the pod's service-account files and KUBERNETES_SERVICE_* variables. */
export function inClusterOptions(dir = IN_CLUSTER_DIR, env: NodeJS.ProcessEnv = process.env): KubeClientOptions {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new SkeinError(KubeCode.NotInCluster, 'not in a cluster: KUBERNETES_SERVICE_HOST is not set (pass --kube-server)');
  let namespace: string | undefined;
  try {
    namespace = readFileSync(`${dir}/namespace`, 'utf8').trim();
  } catch {
    namespace = undefined;
  }
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    tokenFile: `${dir}/token`,
    caFile: `${dir}/ca.crt`,
    ...(namespace ? { namespace } : {}),
  };
}

export class KubeApiError extends SkeinError {
  constructor(
    readonly status: number,
    message: string,
    readonly body?: unknown,
  ) {
    super(status === 410 ? KubeCode.ResourceVersionExpired : KubeCode.ApiRefused, message, { status });
  }
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: Record<string, unknown>;
}

export interface WatchHandle {
  /** Resolves when the server ends the watch (timeout, drop) or rejects on errors / 410. */
  done: Promise<void>;
  abort(): void;
}

export class KubeClient {
  readonly namespace: string;
  private readonly url: URL;
  private readonly agent: http.Agent;
  private token: string | undefined;
  private tokenReadAt = 0;

  constructor(private readonly opts: KubeClientOptions) {
    this.url = new URL(opts.server);
    this.namespace = opts.namespace ?? 'skein-system';
    const ca = opts.caPem ?? (opts.caFile ? readFileSync(opts.caFile, 'utf8') : undefined);
    this.agent =
      this.url.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) })
        : new http.Agent({ keepAlive: true });
  }

  close(): void {
    this.agent.destroy();
  }

  private bearer(): string | undefined {
    if (this.opts.tokenFile) {
      const now = Date.now();
      if (this.token === undefined || now - this.tokenReadAt > (this.opts.tokenReloadMs ?? 60_000)) {
        this.token = readFileSync(this.opts.tokenFile, 'utf8').trim();
        this.tokenReadAt = now;
      }
      return this.token;
    }
    return this.opts.token;
  }

  private open(method: string, path: string, headers: Record<string, string>, timeoutMs: number | undefined): http.ClientRequest {
    const token = this.bearer();
    const mod = this.url.protocol === 'https:' ? https : http;
    const req = mod.request({
      protocol: this.url.protocol,
      hostname: this.url.hostname.replace(/^\[|\]$/g, ''),
      port: this.url.port,
      path,
      method,
      agent: this.agent,
      headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    });
    if (timeoutMs) req.setTimeout(timeoutMs, () => req.destroy(new KubeApiError(0, `${method} ${path}: timed out after ${timeoutMs} ms`)));
    return req;
  }

  /** One JSON request; throws KubeApiError for non-2xx answers. */
  async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = this.open(
        method,
        path,
        payload ? { 'content-type': contentType, 'content-length': String(payload.length) } : {},
        this.opts.timeoutMs ?? 30_000,
      );
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            parsed = text;
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            const msg = (parsed as { message?: string })?.message ?? text.slice(0, 200);
            reject(new KubeApiError(status, `${method} ${path}: ${status} ${msg}`, parsed));
          } else resolve(parsed as T);
        });
      });
      req.end(payload);
    });
  }

  /** Lists a collection, following `continue` pages; returns the items and the list's resourceVersion. */
  async list(path: string, pageSize = 500): Promise<{ items: Record<string, unknown>[]; resourceVersion: string }> {
    const items: Record<string, unknown>[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const q = new URLSearchParams({ limit: String(pageSize) });
      if (cont) q.set('continue', cont);
      const page = await this.request<{ items?: Record<string, unknown>[]; metadata?: { resourceVersion?: string; continue?: string } }>(
        'GET',
        `${path}?${q}`,
      );
      items.push(...(page.items ?? []));
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  /**
   * Watches a collection from `resourceVersion`. Events go to `onEvent` in order. A 410
   * (answer or ERROR event) rejects `done` with a KubeApiError of status 410: relist.
   */
  watch(path: string, resourceVersion: string, onEvent: (e: WatchEvent) => void, timeoutSeconds = 300): WatchHandle {
    const q = new URLSearchParams({
      watch: '1',
      resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    });
    let req: http.ClientRequest | undefined;
    let aborted = false;
    const done = new Promise<void>((resolve, reject) => {
      req = this.open('GET', `${path}?${q}`, {}, undefined);
      req.on('error', (err) => (aborted ? resolve() : reject(err)));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(new KubeApiError(status, `watch ${path}: ${status} ${Buffer.concat(chunks).toString('utf8').slice(0, 200)}`)));
          return;
        }
        let buf = '';
        let failed = false;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (failed) return;
          buf += chunk;
          let nl = buf.indexOf('\n');
          while (nl >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            nl = buf.indexOf('\n');
            if (line === '') continue;
            let ev: WatchEvent;
            try {
              ev = JSON.parse(line) as WatchEvent;
            } catch {
              failed = true;
              res.destroy();
              reject(new KubeApiError(0, `watch ${path}: malformed event line`));
              return;
            }
            if (ev.type === 'ERROR') {
              failed = true;
              const code = Number((ev.object as { code?: number }).code ?? 0);
              res.destroy();
              reject(new KubeApiError(code, `watch ${path}: ${String((ev.object as { message?: string }).message ?? 'error event')}`, ev.object));
              return;
            }
            onEvent(ev);
          }
        });
        res.on('end', () => failed || resolve());
        res.on('aborted', () => failed || resolve());
        res.on('error', (err) => (failed || aborted ? resolve() : reject(err)));
        res.on('close', () => failed || resolve());
      });
      req.end();
    });
    return {
      done,
      abort: () => {
        aborted = true;
        req?.destroy();
      },
    };
  }

  /** The API path of a collection (all namespaces when `namespace` is omitted). */
  static collectionPath(apiVersion: string, plural: string, namespace?: string): string {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
  }
}

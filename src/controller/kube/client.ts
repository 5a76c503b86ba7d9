/**
 * The controller's Kubernetes client: @kubernetes/client-node under a small façade the
 * informers, the lease, the status writer and the Secret root store share. Credentials, TLS
 * (the cluster CA), exec auth plugins and rotating token files are the library's KubeConfig
 * (see kube-config.ts); typed API clients write leases, Secrets, Events, status subresources
 * and TokenReviews; the library's Watch streams watch events. Lists go through the library's
 * HTTP stack too but come back as the JSON the server sent: the typed list calls turn objects
 * into model classes (Date fields, unknown fields dropped), and the store must hold the same
 * shape the watch events have.
 */
import {
  ApiException,
  AuthenticationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  type ConfigurationOptions,
  type KubeConfig,
  Observable,
  type ObservableMiddleware,
  ServerConfiguration,
  Watch,
} from '@kubernetes/client-node';
import { messageOf, SkeinError } from '../../errors.js';
import { KubeCode } from '../codes.js';
import { PooledKubeConfig } from './kube-config.js';

export interface KubeClientOptions {
  /** The controller's own namespace (leases, secrets). Default: the context's, else skein-system. */
  namespace?: string;
  /** Per-request timeout for non-watch calls (ms). Default 30000. */
  timeoutMs?: number;
}

/** An API call that failed: `status` is the HTTP status, 0 when no answer came (connection, TLS, timeout). */
export class KubeApiError extends SkeinError {
  constructor(
    readonly status: number,
    message: string,
    readonly body?: unknown,
    cause?: unknown,
  ) {
    super(status === 410 ? KubeCode.ResourceVersionExpired : status === 0 ? KubeCode.ApiUnreachable : KubeCode.ApiRefused, message, { status }, cause === undefined ? undefined : { cause });
  }
}

/** The error of any library call as a KubeApiError (stable code, HTTP status). */
export function kubeErrorOf(what: string, err: unknown): KubeApiError {
  if (err instanceof KubeApiError) return err;
  if (err instanceof ApiException) {
    const body = typeof err.body === 'string' ? safeJson(err.body) : err.body;
    const msg = (body as { message?: string } | undefined)?.message ?? (typeof err.body === 'string' ? err.body.slice(0, 200) : '');
    return new KubeApiError(err.code, `${what}: ${err.code} ${msg}`.trim(), body, err);
  }
  const status = Number((err as { statusCode?: number }).statusCode ?? 0);
  return new KubeApiError(Number.isFinite(status) ? status : 0, `${what}: ${messageOf(err)}`, undefined, err);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
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

/**
 * Options of one typed call (the object-parameter API takes observable middleware): a
 * timeout, and optionally the Content-Type of a patch.
 */
export function callOptions(timeoutMs: number, contentType?: string): ConfigurationOptions {
  const mw: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(AbortSignal.timeout(timeoutMs));
      if (contentType) ctx.setHeaderParam('Content-Type', contentType);
      return new Observable(Promise.resolve(ctx));
    },
    post: (res) => new Observable(Promise.resolve(res)),
  };
  return { middleware: [mw], middlewareMergeStrategy: 'append' };
}

export class KubeClient {
  readonly namespace: string;
  readonly server: string;
  readonly core: CoreV1Api;
  readonly coordination: CoordinationV1Api;
  readonly custom: CustomObjectsApi;
  readonly authentication: AuthenticationV1Api;
  private readonly watcher: Watch;
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly base: ServerConfiguration<Record<string, string>>;
  private readonly timeoutMs: number;

  constructor(
    readonly kc: KubeConfig,
    opts: KubeClientOptions = {},
  ) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new SkeinError(KubeCode.ConfigInvalid, 'the kubeconfig has no current cluster');
    this.server = cluster.server.replace(/\/+$/, '');
    this.namespace = opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'skein-system';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.core = kc.makeApiClient(CoreV1Api);
    this.coordination = kc.makeApiClient(CoordinationV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.authentication = kc.makeApiClient(AuthenticationV1Api);
    this.watcher = new Watch(kc);
    this.base = new ServerConfiguration(this.server, {});
  }

  close(): void {
    if (this.kc instanceof PooledKubeConfig) this.kc.close();
  }

  /** Options for a typed call: this client's timeout, and a patch's Content-Type. */
  options(contentType?: string): ConfigurationOptions {
    return callOptions(this.timeoutMs, contentType);
  }

  /**
   * One JSON request to any API path, through the library's HTTP stack and authentication
   * (the same KubeConfig as the typed clients); the answer as the server sent it. Throws
   * KubeApiError for non-2xx answers and transport failures.
   */
  async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const what = `${method} ${path}`;
    let status: number;
    let text: string;
    try {
      const ctx = this.base.makeRequestContext(path, method as HttpMethod);
      ctx.setHeaderParam('Accept', 'application/json');
      if (body !== undefined) {
        ctx.setHeaderParam('Content-Type', contentType);
        ctx.setBody(JSON.stringify(body));
      }
      await this.kc.applySecurityAuthentication(ctx);
      ctx.setSignal(AbortSignal.timeout(this.timeoutMs));
      const res = await this.http.send(ctx).toPromise();
      status = res.httpStatusCode;
      text = await res.body.text();
    } catch (err) {
      throw kubeErrorOf(what, err);
    }
    const parsed = text === '' ? {} : safeJson(text);
    if (status < 200 || status >= 300) {
      const msg = (parsed as { message?: string })?.message ?? text.slice(0, 200);
      throw new KubeApiError(status, `${what}: ${status} ${msg}`, parsed);
    }
    return parsed as T;
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
        HttpMethod.GET,
        `${path}?${q}`,
      );
      items.push(...(page.items ?? []));
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  /**
   * Watches a collection from `resourceVersion` with the library's Watch (bookmarks asked
   * for). Events go to `onEvent` in order. A 410 (answer or ERROR event) rejects `done` with
   * a KubeApiError of status 410: relist.
   */
  watch(path: string, resourceVersion: string, onEvent: (e: WatchEvent) => void, timeoutSeconds = 300): WatchHandle {
    let aborted = false;
    let controller: AbortController | undefined;
    let failed: KubeApiError | undefined;
    let endNow: (() => void) | undefined;
    const done = new Promise<void>((resolve, reject) => {
      let settled = false;
      // The library hands its AbortController over only once the response headers are in;
      // an abort before that ends `done` at once and aborts the request when it can.
      endNow = () => {
        settled = true;
        resolve();
      };
      const finish = (err: unknown) => {
        if (settled) return;
        settled = true;
        if (aborted) resolve();
        else if (failed) reject(failed);
        else if (err) reject(kubeErrorOf(`watch ${path}`, err));
        else resolve();
      };
      this.watcher
        .watch(
          path,
          { resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
          (type: string, object: Record<string, unknown>) => {
            if (failed || aborted) return;
            if (type === 'ERROR') {
              const st = object as { code?: number; message?: string };
              failed = new KubeApiError(Number(st.code ?? 0), `watch ${path}: ${String(st.message ?? 'error event')}`, object);
              controller?.abort();
              return;
            }
            onEvent({ type: type as WatchEvent['type'], object });
          },
          finish,
        )
        .then(
          (c) => {
            controller = c;
            if (aborted || failed) c.abort();
          },
          finish,
        );
    });
    return {
      done,
      abort: () => {
        aborted = true;
        controller?.abort();
        endNow?.();
      },
    };
  }

  /** The API path of a collection (all namespaces when `namespace` is omitted). */
  static collectionPath(apiVersion: string, plural: string, namespace?: string): string {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
  }
}

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { messageOf, SkeinError } from '../../errors.js';
import type { Authenticator, CallerIdentity, PresentedCredentials } from './authn.js';
import { IdentityCode } from '../codes.js';

/** Minimal HTTP client the TokenReview authenticator needs (injectable for tests/proxies). */
export interface JsonHttpClient {
  postJson(url: string, body: unknown, headers: Record<string, string>, timeoutMs: number): Promise<{ status: number; body: unknown }>;
}

/** JSON over node:http(s); `ca` is the API server's CA bundle (in-cluster: the SA ca.crt). */
export class NodeJsonHttpClient implements JsonHttpClient {
  constructor(private readonly tls: { ca?: string } = {}) {}

  postJson(url: string, body: unknown, headers: Record<string, string>, timeoutMs: number): Promise<{ status: number; body: unknown }> {
    const u = new URL(url);
    const payload = Buffer.from(JSON.stringify(body));
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'content-length': String(payload.length), ...headers },
      ca: this.tls.ca,
      timeout: timeoutMs,
    });
    return new Promise((resolve, reject) => {
      req.on('timeout', () => req.destroy(new Error(`TokenReview request timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > 1 << 20) req.destroy(new Error('TokenReview response too large'));
          else chunks.push(c);
        });
        res.on('error', reject);
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null') });
          } catch (err) {
            reject(err);
          }
        });
      });
      req.end(payload);
    });
  }
}

export interface TokenReviewOptions {
  /** API server base URL, e.g. https://kubernetes.default.svc */
  apiServer: string;
  /** The controller's own token (allowed to create tokenreviews). A function: projected tokens rotate. */
  controllerToken: () => string | Promise<string>;
  /** Service accounts allowed to call the CA, as `system:serviceaccount:<ns>:<name>`. */
  allowedPrincipals: string[];
  /** Audiences the agent token must carry (its projected-token audience). */
  audiences?: string[];
  client?: JsonHttpClient;
  timeoutMs?: number;
}

/** TokenReview user.extra key where the API server puts a bound token's node (k8s >= 1.30). */
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/**
 * Kubernetes authentication of agents: POSTs a TokenReview of the agent's projected
 * service-account token; accepts it when authenticated, from an allowed service account,
 * for the wanted audience, bound to a pod on a node — and that node is the caller's node.
 */
export class TokenReviewAuthenticator implements Authenticator {
  private readonly client: JsonHttpClient;

  constructor(private readonly opts: TokenReviewOptions) {
    this.client = opts.client ?? new NodeJsonHttpClient();
  }

  async authenticate(creds: PresentedCredentials): Promise<CallerIdentity> {
    const token = creds.bearerToken;
    if (!token) throw new SkeinError(IdentityCode.Unauthenticated, 'no bearer token');
    const review = {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, ...(this.opts.audiences ? { audiences: this.opts.audiences } : {}) },
    };
    let res: { status: number; body: unknown };
    try {
      res = await this.client.postJson(
        `${this.opts.apiServer.replace(/\/+$/, '')}/apis/authentication.k8s.io/v1/tokenreviews`,
        review,
        { authorization: `Bearer ${await this.opts.controllerToken()}` },
        this.opts.timeoutMs ?? 5000,
      );
    } catch (err) {
      // The API server being away is not the caller's fault: say so (the agent retries).
      throw new SkeinError(IdentityCode.CaUnavailable, `TokenReview failed: ${messageOf(err)}`, undefined, { cause: err });
    }
    if (res.status !== 201 && res.status !== 200) {
      throw new SkeinError(IdentityCode.CaUnavailable, `TokenReview answered HTTP ${res.status}`, { status: res.status });
    }
    const status = (res.body as { status?: TokenReviewStatus } | null)?.status ?? {};
    if (status.authenticated !== true) throw new SkeinError(IdentityCode.Unauthenticated, 'token not authenticated by the API server');
    const principal = status.user?.username ?? '';
    if (!this.opts.allowedPrincipals.includes(principal)) {
      throw new SkeinError(IdentityCode.Unauthenticated, 'token belongs to a principal not allowed to call the CA', { principal });
    }
    if (this.opts.audiences && !this.opts.audiences.some((a) => status.audiences?.includes(a))) {
      throw new SkeinError(IdentityCode.Unauthenticated, 'token not issued for the CA audience');
    }
    const node = status.user?.extra?.[NODE_NAME_EXTRA]?.[0];
    if (!node) throw new SkeinError(IdentityCode.Unauthenticated, 'token is not bound to a node (needs a projected token, Kubernetes >= 1.30)');
    return { node, method: 'tokenreview', principal };
  }
}

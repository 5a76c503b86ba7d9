/**
 * Kubernetes authentication of agents by TokenReview, sent with @kubernetes/client-node over
 * the controller's own KubeConfig: the same API server, cluster CA (in-cluster: the service
 * account's ca.crt) and credential (rotating token file, exec plugin...) as its watches, so
 * a TokenReview never goes to a server the cluster CA does not vouch for.
 */
import { ApiException, AuthenticationV1Api, type KubeConfig, Observable, type ObservableMiddleware } from '@kubernetes/client-node';
import { messageOf, SkeinError } from '../../errors.js';
import type { Authenticator, CallerIdentity, PresentedCredentials } from './authn.js';
import { IdentityCode } from '../codes.js';

interface TokenReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[]> };
}

/** Sends one TokenReview; the API server's `status`. Throws on transport errors and non-2xx answers. */
export interface TokenReviewer {
  review(spec: { token: string; audiences?: string[] }, timeoutMs: number): Promise<TokenReviewStatus>;
}

/** TokenReviews over a KubeConfig (its cluster CA and credentials). */
export class KubeTokenReviewer implements TokenReviewer {
  private readonly api: AuthenticationV1Api;

  constructor(kc: KubeConfig) {
    this.api = kc.makeApiClient(AuthenticationV1Api);
  }

  async review(spec: { token: string; audiences?: string[] }, timeoutMs: number): Promise<TokenReviewStatus> {
    const timeout: ObservableMiddleware = {
      pre: (ctx) => {
        ctx.setSignal(AbortSignal.timeout(timeoutMs));
        return new Observable(Promise.resolve(ctx));
      },
      post: (res) => new Observable(Promise.resolve(res)),
    };
    const res = await this.api.createTokenReview(
      { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec } },
      { middleware: [timeout], middlewareMergeStrategy: 'append' },
    );
    return (res.status ?? {}) as TokenReviewStatus;
  }
}

export interface TokenReviewOptions {
  /** The controller's KubeConfig (API server, cluster CA, credential allowed to create tokenreviews). */
  kubeConfig?: KubeConfig;
  /** Instead of kubeConfig (tests, other transports). */
  reviewer?: TokenReviewer;
  /** Service accounts allowed to call the CA, as `system:serviceaccount:<ns>:<name>`. */
  allowedPrincipals: string[];
  /** Audiences the agent token must carry (its projected-token audience). */
  audiences?: string[];
  timeoutMs?: number;
}

/** TokenReview user.extra key where the API server puts a bound token's node (k8s >= 1.30). */
export const NODE_NAME_EXTRA = 'authentication.kubernetes.io/node-name';

/**
 * Kubernetes authentication of agents: POSTs a TokenReview of the agent's projected
 * service-account token; accepts it when authenticated, from an allowed service account,
 * for the wanted audience, bound to a pod on a node — and that node is the caller's node.
 */
export class TokenReviewAuthenticator implements Authenticator {
  private readonly reviewer: TokenReviewer;

  constructor(private readonly opts: TokenReviewOptions) {
    const reviewer = opts.reviewer ?? (opts.kubeConfig ? new KubeTokenReviewer(opts.kubeConfig) : undefined);
    if (!reviewer) throw new SkeinError(IdentityCode.CaUnavailable, 'TokenReview authenticator without a KubeConfig');
    this.reviewer = reviewer;
  }

  async authenticate(creds: PresentedCredentials): Promise<CallerIdentity> {
    const token = creds.bearerToken;
    if (!token) throw new SkeinError(IdentityCode.Unauthenticated, 'no bearer token');
    let status: TokenReviewStatus;
    try {
      status = await this.reviewer.review({ token, ...(this.opts.audiences ? { audiences: this.opts.audiences } : {}) }, this.opts.timeoutMs ?? 5000);
    } catch (err) {
      // The API server being away (or refusing the controller) is not the caller's fault: say
      // so (the agent retries).
      if (err instanceof ApiException) {
        throw new SkeinError(IdentityCode.CaUnavailable, `TokenReview answered HTTP ${err.code}`, { status: err.code }, { cause: err });
      }
      throw new SkeinError(IdentityCode.CaUnavailable, `TokenReview failed: ${messageOf(err)}`, undefined, { cause: err });
    }
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

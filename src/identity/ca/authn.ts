/** Who is asking the CA: a node agent, identified by its node name. */
export interface CallerIdentity {
  node: string;
  /** How it was established (for logs): 'bootstrap-token', 'tokenreview'. */
  method: string;
  /** The authenticated principal, e.g. system:serviceaccount:skein-system:skein-agent. */
  principal?: string;
}

/** The credentials a call presented (from the gRPC metadata, independent of gRPC). */
export interface PresentedCredentials {
  /** The token of `authorization: Bearer <token>`, when present. */
  bearerToken?: string;
  /** Address of the caller, for logs. */
  peer?: string;
}

/**
 * Authenticates a CA caller. Rejects (throws) a SkeinError SKEIN_IDENTITY_UNAUTHENTICATED
 * when the credentials are missing or wrong; never says which part was wrong to the caller.
 */
export interface Authenticator {
  authenticate(creds: PresentedCredentials): Promise<CallerIdentity>;
}

/** The bearer token of an `authorization` metadata value, or undefined. */
export function bearerTokenOf(value: string | undefined): string | undefined {
  const m = value?.match(/^\s*Bearer\s+(\S+)\s*$/i);
  return m?.[1];
}

/**
 * The reserved fields of an HTTP request travelling between two skein agents. When both ends
 * of a request are meshed, the source agent sends it as one HTTP/2 request stream on the
 * pooled mTLS session to the destination agent (or on an in-memory session to this agent's
 * own inbound side) and says, in these fields, what only the mesh knows:
 *
 *   skein-dst    `ip:port` ([v6]:port) of the destination pod and app port the request is for;
 *                the destination agent serves it only if that address is one of the pod's.
 *   skein-proto  what the app at the destination speaks: `http1` (HTTP/1.1 keep-alive) or
 *                `http2` (h2c, gRPC). The destination agent talks to the app in it.
 *   skein-src    the source pod's IP (known from the listener that accepted the app's
 *                connection), for the destination's policy (`ipBlocks`, `source.ip`).
 *   skein-peer   the source pod's workload, app and version labels (`workload;app;version`,
 *                each percent-encoded), for telemetry only (Istio's peer metadata exchange):
 *                the destination holds only its own node's pods. Its namespace is never taken
 *                from it but from the authenticated principal, so a peer can at most mislabel
 *                itself within its own identity; no policy reads it.
 *
 * Who sent the request is not a field: it is the TLS peer's certificate (or the local source
 * pod's listener), which a header cannot forge. Every `skein-*` field an app sends is removed
 * by the header filters (headers.ts) before these are added, and the destination removes
 * them before the app sees the request.
 */
import type { HttpVersion } from './types.js';

export const MeshHeader = {
  Destination: 'skein-dst',
  Protocol: 'skein-proto',
  Source: 'skein-src',
  Peer: 'skein-peer',
} as const;

/** The source pod's labels as telemetry names them (`unknown` parts are empty). */
export interface PeerLabels {
  workload: string;
  app: string;
  version: string;
}

const MAX_PEER_PART = 253;

/** The `skein-peer` value of a pod. */
export function encodePeer(p: PeerLabels): string {
  return `${encodeURIComponent(p.workload)};${encodeURIComponent(p.app)};${encodeURIComponent(p.version)}`;
}

/** Values seen recently (a node's pods send the same few): parsed once, not per request. */
const decoded = new Map<string, PeerLabels | undefined>();
const DECODED_MAX = 4096;

/** A `skein-peer` value read back; undefined when it is not one (never throws). */
export function decodePeer(value: string | string[] | undefined): PeerLabels | undefined {
  if (typeof value !== 'string') return undefined;
  if (decoded.has(value)) return decoded.get(value);
  const p = parsePeer(value);
  if (decoded.size >= DECODED_MAX) decoded.clear();
  decoded.set(value, p);
  return p;
}

function parsePeer(value: string): PeerLabels | undefined {
  if (value.length > 3 * 3 * MAX_PEER_PART + 2) return undefined;
  const parts = value.split(';');
  if (parts.length !== 3) return undefined;
  try {
    const [workload, app, version] = parts.map((x) => decodeURIComponent(x)) as [string, string, string];
    const ok = (x: string) => x.length <= MAX_PEER_PART && /^[A-Za-z0-9._-]*$/.test(x);
    if (!workload || !ok(workload) || !ok(app) || !ok(version)) return undefined;
    return { workload, app, version };
  } catch {
    return undefined;
  }
}

/** The app protocol named by a `skein-proto` value; undefined for anything else. */
export function appProtocolOf(value: string | string[] | undefined): HttpVersion | undefined {
  return value === 'http1' || value === 'http2' ? value : undefined;
}

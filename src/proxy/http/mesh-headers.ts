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
} as const;

/** The app protocol named by a `skein-proto` value; undefined for anything else. */
export function appProtocolOf(value: string | string[] | undefined): HttpVersion | undefined {
  return value === 'http1' || value === 'http2' ? value : undefined;
}

/**
 * Reads a controller over gRPC with an operator's credential: its status (GetStatus, what
 * `skein status` shows), the mesh's traffic (GetTraffic, `skein top`) and live sampled
 * requests (Tap, `skein tap`).
 */
import * as grpc from '@grpc/grpc-js';
import { type CaStatus, ConfigDiscoveryClient, type StatusResponse, type TapEvent, type TapRequest, type TrafficResponse } from '../api/config-wire.js';

export interface StatusClientOptions {
  /** host:port of the controller's config service. */
  address: string;
  /** Any credential the controller accepts (a node's bootstrap token in the lab). */
  token: string;
  /** TLS roots; absent = plaintext. */
  rootsPem?: string | string[];
  serverName?: string;
  deadlineMs?: number;
}

function clientOf(opts: StatusClientOptions): { client: ConfigDiscoveryClient; md: grpc.Metadata } {
  const roots = opts.rootsPem;
  const creds = roots ? grpc.credentials.createSsl(Buffer.from(Array.isArray(roots) ? roots.join('') : roots)) : grpc.credentials.createInsecure();
  const client = new ConfigDiscoveryClient(opts.address, creds, opts.serverName ? { 'grpc.ssl_target_name_override': opts.serverName } : {});
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${opts.token}`);
  return { client, md };
}

export async function fetchControllerStatus(opts: StatusClientOptions): Promise<StatusResponse> {
  const { client, md } = clientOf(opts);
  try {
    return await client.getStatus(md, { deadline: Date.now() + (opts.deadlineMs ?? 5000) });
  } finally {
    client.close();
  }
}

/** The CA's roots, the rotation under way, and each agent's trust (skein ca status). */
export async function fetchCaStatus(opts: StatusClientOptions): Promise<CaStatus> {
  const { client, md } = clientOf(opts);
  try {
    return await client.getCaStatus(md, { deadline: Date.now() + (opts.deadlineMs ?? 5000) });
  } finally {
    client.close();
  }
}

/** One rotation step (skein ca rotate); needs the operator credential. */
export async function rotateCaStep(opts: StatusClientOptions, step: string): Promise<CaStatus> {
  const { client, md } = clientOf(opts);
  try {
    return await client.rotateCa({ step }, md, { deadline: Date.now() + (opts.deadlineMs ?? 15_000) });
  } finally {
    client.close();
  }
}

/** The mesh's traffic over the controller's window (edges, workloads). */
export async function fetchControllerTraffic(opts: StatusClientOptions): Promise<TrafficResponse> {
  const { client, md } = clientOf(opts);
  try {
    return await client.getTraffic(md, { deadline: Date.now() + (opts.deadlineMs ?? 5000) });
  } finally {
    client.close();
  }
}

/**
 * Opens a tap session: `onEvent` for each sampled request until the controller ends it (its
 * limits) or `stop()` is called. Resolves when it ends; rejects with the controller's refusal.
 */
export function tapController(opts: StatusClientOptions, req: TapRequest, onEvent: (e: TapEvent) => void): { done: Promise<void>; stop: () => void } {
  const { client, md } = clientOf(opts);
  const call = client.tap(req, md);
  let stopped = false;
  const done = new Promise<void>((resolve, reject) => {
    call.on('data', onEvent);
    call.on('end', () => resolve());
    call.on('error', (err: grpc.ServiceError) => (stopped && err.code === grpc.status.CANCELLED ? resolve() : reject(err)));
  }).finally(() => client.close());
  return {
    done,
    stop: () => {
      stopped = true;
      call.cancel();
    },
  };
}

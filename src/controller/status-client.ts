/**
 * Reads a controller's status over gRPC (ConfigDiscovery.GetStatus): what `skein status`
 * shows — refused resources with field and reason, connected agents and their ACK/NACK state.
 */
import * as grpc from '@grpc/grpc-js';
import { ConfigDiscoveryClient, type StatusResponse } from '../api/config-wire.js';

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

export async function fetchControllerStatus(opts: StatusClientOptions): Promise<StatusResponse> {
  const roots = opts.rootsPem;
  const creds = roots ? grpc.credentials.createSsl(Buffer.from(Array.isArray(roots) ? roots.join('') : roots)) : grpc.credentials.createInsecure();
  const client = new ConfigDiscoveryClient(
    opts.address,
    creds,
    opts.serverName ? { 'grpc.ssl_target_name_override': opts.serverName } : {},
  );
  try {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${opts.token}`);
    return await client.getStatus(md, { deadline: Date.now() + (opts.deadlineMs ?? 5000) });
  } finally {
    client.close();
  }
}

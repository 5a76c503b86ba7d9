/**
 * Reads a controller's status over gRPC (ConfigDiscovery.GetStatus): what `skein status`
 * shows — refused resources with field and reason, connected agents and their ACK/NACK state.
 */
import * as grpc from '@grpc/grpc-js';
import { loadApiProto } from '../identity/repo-path.js';

export interface WireStatus {
  controller_id: string;
  version: string;
  objects: number;
  resources: number;
  refusals: { object: string; origin: string; field: string; reason: string; code: string }[];
  agents: {
    node: string;
    peer: string;
    connected_at: string;
    acked_version: string;
    acks: number;
    nacks: number;
    last_nack: string;
    resources: number;
    bytes_sent: number;
  }[];
  leader: boolean;
}

type StatusClient = grpc.Client & {
  GetStatus(req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: WireStatus) => void): void;
};

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

export async function fetchControllerStatus(opts: StatusClientOptions): Promise<WireStatus> {
  const pkg = loadApiProto('config.proto') as unknown as {
    skein: { config: { v1: { ConfigDiscovery: new (a: string, c: grpc.ChannelCredentials, o?: grpc.ChannelOptions) => StatusClient } } };
  };
  const roots = opts.rootsPem;
  const creds = roots ? grpc.credentials.createSsl(Buffer.from(Array.isArray(roots) ? roots.join('') : roots)) : grpc.credentials.createInsecure();
  const client = new pkg.skein.config.v1.ConfigDiscovery(
    opts.address,
    creds,
    opts.serverName ? { 'grpc.ssl_target_name_override': opts.serverName } : {},
  );
  try {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${opts.token}`);
    return await new Promise<WireStatus>((resolve, reject) =>
      client.GetStatus({}, md, { deadline: Date.now() + (opts.deadlineMs ?? 5000) }, (err, res) => (err ? reject(err) : resolve(res))),
    );
  } finally {
    client.close();
  }
}

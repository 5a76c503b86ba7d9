/** Loads the lab echo service definition (src/api/lab/echo.proto) for clients and servers. */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { repoRoot } from '../../paths.js';

export interface EchoReply {
  pod: string;
  namespace: string;
  node: string;
  ip: string;
  payload: Buffer;
  receivedBytes: string | number;
  receivedSha256: string;
  messages: number;
}

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated client constructor; `.service` is the service definition for servers. */
export function echoService(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync(join(repoRoot(), 'src', 'api', 'lab', 'echo.proto'), {
    keepCase: false,
    longs: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { skein: { lab: { v1: { Echo: grpc.ServiceClientConstructor } } } };
  cached = pkg.skein.lab.v1.Echo;
  return cached;
}

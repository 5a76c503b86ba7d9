import type * as grpc from '@grpc/grpc-js';

/**
 * Stops a gRPC server gracefully: no new calls, in-flight ones get `graceMs` to finish, then
 * whatever is left is cancelled.
 */
export function shutdownGrpcServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    force.unref();
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}

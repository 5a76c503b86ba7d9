import * as grpc from '@grpc/grpc-js';
import { SkeinError } from '../errors.js';
import { IdentityCode } from './codes.js';

/** gRPC trailer carrying the stable skein error code of a refusal. */
export const SKEIN_CODE_METADATA = 'skein-code';

const INVALID_ARGUMENT_CODES = new Set<string>([
  IdentityCode.CsrInvalid,
  IdentityCode.CsrSignature,
  IdentityCode.CsrKey,
  IdentityCode.CsrSanCount,
  IdentityCode.CsrSanNotUri,
  IdentityCode.SpiffeIdInvalid,
  IdentityCode.TrustDomain,
  IdentityCode.TtlInvalid,
]);

/** The gRPC status a CA refusal is sent with. */
export function grpcStatusOf(code: string): grpc.status {
  if (INVALID_ARGUMENT_CODES.has(code)) return grpc.status.INVALID_ARGUMENT;
  if (code === IdentityCode.Unauthenticated) return grpc.status.UNAUTHENTICATED;
  if (code === IdentityCode.NodeNotAuthorized) return grpc.status.PERMISSION_DENIED;
  if (code === IdentityCode.CaUnavailable) return grpc.status.UNAVAILABLE;
  return grpc.status.INTERNAL;
}

/** A grpc-js ServiceError carrying a SkeinError (its code in message and trailer). */
export function toServiceError(err: unknown): Partial<grpc.ServiceError> {
  const code = err instanceof SkeinError ? err.code : IdentityCode.CaInternal;
  // Internal errors are not described to the caller (they are logged on the CA side).
  const message = err instanceof SkeinError ? err.message : 'internal CA error';
  const metadata = new grpc.Metadata();
  metadata.set(SKEIN_CODE_METADATA, code);
  return { code: grpcStatusOf(code), details: `${code}: ${message}`, metadata };
}

/** Refusals the agent should not expect to go away by retrying soon. */
export function isPermanentGrpcStatus(status: grpc.status | undefined): boolean {
  return status === grpc.status.INVALID_ARGUMENT || status === grpc.status.PERMISSION_DENIED || status === grpc.status.UNAUTHENTICATED;
}

/** A SkeinError from a failed CA call: the server's skein code when it sent one. */
export function fromServiceError(err: grpc.ServiceError | Error): SkeinError {
  const se = err as Partial<grpc.ServiceError>;
  const sent = se.metadata?.get(SKEIN_CODE_METADATA)[0];
  const status = se.code;
  let code = typeof sent === 'string' ? sent : undefined;
  if (!code) {
    code =
      status === grpc.status.UNAVAILABLE || status === grpc.status.DEADLINE_EXCEEDED || status === grpc.status.CANCELLED
        ? IdentityCode.CaUnavailable
        : status === grpc.status.UNAUTHENTICATED
          ? IdentityCode.Unauthenticated
          : IdentityCode.IssuanceFailed;
  }
  const message = (se.details ?? err.message).replace(new RegExp(`^${code}: `), '');
  return new SkeinError(code, message, { grpcStatus: status, permanent: isPermanentGrpcStatus(status) }, { cause: err });
}

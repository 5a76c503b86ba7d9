/**
 * Loads skein's .proto files (src/api) at run time. The typed wire modules next to this file
 * (config-wire.ts, ca-wire.ts) are what the rest of skein imports; this is their loader.
 */
import * as protoLoader from '@grpc/proto-loader';
import { repoPath } from '../paths.js';

// Field names as written (snake_case), int64 as numbers, enums as names, defaults filled in:
// the wire types in config-wire.ts and ca-wire.ts are written against these options.
const LOAD_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

const loaded = new Map<string, protoLoader.PackageDefinition>();

/** The parsed definitions of one .proto file of src/api, keyed by fully qualified name. Parsed once per file. */
export function loadApiProto(file: string): protoLoader.PackageDefinition {
  const cached = loaded.get(file);
  if (cached) return cached;
  const def = protoLoader.loadSync(repoPath('src', 'api', file), LOAD_OPTIONS);
  loaded.set(file, def);
  return def;
}

/** A service of a .proto file of src/api, by fully qualified name ('skein.ca.v1.CertificateService'). */
export function loadApiService(file: string, service: string): protoLoader.ServiceDefinition {
  const def = loadApiProto(file)[service];
  // Message and enum definitions carry a `format`; a service is a plain map of methods.
  if (def === undefined || 'format' in def) throw new Error(`${file} defines no service ${service}`);
  return def;
}

/** One method of a service, typed with the wire shapes of its request and response. */
export interface WireMethod<Request, Response> {
  path: string;
  serialize(request: Request): Buffer;
  deserialize(bytes: Buffer): Response;
}

/**
 * A method of `service`, typed by the caller. The type parameters are the promise the wire
 * module makes about the .proto (decoded with LOAD_OPTIONS); the loader itself is untyped.
 */
export function wireMethod<Request extends object, Response>(service: protoLoader.ServiceDefinition, name: string): WireMethod<Request, Response> {
  const m = service[name];
  if (!m) throw new Error(`service has no method ${name}`);
  return { path: m.path, serialize: (r) => m.requestSerialize(r), deserialize: (b) => m.responseDeserialize(b) as Response };
}

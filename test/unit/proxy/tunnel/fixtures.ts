/**
 * Test fixtures for the tunnel and inbound tests: a throwaway mesh CA (and a second one for
 * "another trust domain"), SPIFFE workload certificates (ECDSA P-256, URI SAN) including
 * deliberately bad ones, an in-memory IdentitySource, workloads, an AppConnector over
 * loopback and small TCP servers. Everything listens on 127.0.0.1 and is closed by t.teardown.
 */
import { createHash, webcrypto } from 'node:crypto';
import { type AddressInfo, connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { SpiffeId, Workload } from '../../../../src/config/model.js';
import type { IdentitySource, WorkloadCertificate } from '../../../../src/identity/workload/types.js';
import type { AppConnector } from '../../../../src/proxy/inbound/types.js';
// The same provider (and Reflect shim) the CA uses: certificates are built as skein builds them.
import { x509 } from '../../../../src/identity/x509/provider.js';

const ALG: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

export const TRUST_DOMAIN = 'cluster.local';
export const OTHER_TRUST_DOMAIN = 'other.test';

export interface TestCa {
  trustDomain: string;
  certPem: string;
  keys: webcrypto.CryptoKeyPair;
  cert: x509.X509Certificate;
}

let serial = 1;
function nextSerial(): string {
  serial++;
  return serial.toString(16).padStart(4, '0');
}

export async function makeCa(trustDomain: string, name = `skein test CA ${trustDomain}`): Promise<TestCa> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: `CN=${name}, O=${trustDomain}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { trustDomain, certPem: cert.toString('pem'), keys, cert };
}

/**
 * A leaf certificate signed by `ca`. `uris` are the URI SANs (normally exactly one SPIFFE ID;
 * pass [] or two to make a bad one).
 */
export async function makeLeaf(
  ca: TestCa,
  uris: string[],
  identity?: SpiffeId,
  validity: { notBefore?: Date; notAfter?: Date } = {},
): Promise<WorkloadCertificate> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const notBefore = validity.notBefore ?? new Date(now - 60_000);
  const notAfter = validity.notAfter ?? new Date(now + 3600_000);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
  ];
  if (uris.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(uris.map((u) => ({ type: 'url' as const, value: u })), true));
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: nextSerial(),
    // SPIFFE SVIDs carry the identity in the SAN only; the subject is informational.
    subject: 'O=skein test workload',
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    identity: identity ?? uris[0] ?? 'none',
    certChainPem: cert.toString('pem'),
    privateKeyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    notBefore,
    notAfter,
  };
}

export function spiffe(ns: string, sa: string, td = TRUST_DOMAIN): SpiffeId {
  return `spiffe://${td}/ns/${ns}/sa/${sa}`;
}

/** In-memory IdentitySource; certificates and bundle can be swapped to simulate rotation. */
export class TestIdentity implements IdentitySource {
  readonly certs = new Map<SpiffeId, WorkloadCertificate>();
  bundle: string[];
  constructor(
    readonly td: string,
    bundle: string[],
  ) {
    this.bundle = bundle;
  }
  set(cert: WorkloadCertificate, identity: SpiffeId = cert.identity): this {
    this.certs.set(identity, cert);
    return this;
  }
  async certificateFor(identity: SpiffeId): Promise<WorkloadCertificate> {
    const c = this.certs.get(identity);
    if (!c) throw new Error(`no certificate for ${identity}`);
    return c;
  }
  currentCertificate(identity: SpiffeId): WorkloadCertificate | undefined {
    return this.certs.get(identity);
  }
  trustBundlePem(): string[] {
    return this.bundle;
  }
  trustDomain(): string {
    return this.td;
  }
}

export function workload(name: string, ips: string[], identity: SpiffeId, mode: Workload['peerAuthentication'] = 'STRICT'): Workload {
  return {
    uid: `uid-${name}-${process.pid}`,
    namespace: 'default',
    name,
    serviceAccount: name,
    node: 'node-a',
    ips,
    labels: {},
    annotations: {},
    identity,
    meshEnabled: true,
    peerAuthentication: mode,
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    ready: true,
  };
}

/** AppConnector for tests: the "pod" is 127.0.0.1, every app port a loopback port. */
export class LoopbackAppConnector implements AppConnector {
  connects = 0;
  connect(_w: Workload, port: number, signal?: AbortSignal): Promise<Duplex> {
    this.connects++;
    return new Promise((resolve, reject) => {
      const s = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
      const onAbort = (): void => {
        s.destroy();
        reject(new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      s.once('connect', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(s);
      });
      s.once('error', (err) => {
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      });
    });
  }
}

export interface TestTcpServer {
  server: Server;
  port: number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 with allowHalfOpen; `handler` gets every connection. */
export async function tcpServer(handler: (s: Socket) => void): Promise<TestTcpServer> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    handler(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echo: every byte back; the client's FIN is answered with ours after the echo drained. */
export function echoHandler(s: Socket): void {
  s.pipe(s);
}

/** A port with nothing listening (bound then closed). */
export async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

/**
 * Deterministic pseudo-random bytes, chunk by chunk (fast: one block of up to 1 MiB reused,
 * each chunk stamped with its index so reordering or duplication changes the hash).
 */
export function* payloadChunks(size: number, seed = 1): Generator<Buffer> {
  const block = Buffer.alloc(Math.min(Math.max(size, 1), 1 << 20));
  let x = seed * 2654435761;
  for (let i = 0; i < block.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    block[i] = x >>> 24;
  }
  let left = size;
  let n = 0;
  while (left > 0) {
    const len = Math.min(left, block.length);
    const b = Buffer.from(block.subarray(0, len));
    if (len >= 4) b.writeUInt32BE(n >>> 0, 0);
    n++;
    left -= len;
    yield b;
  }
}

/** payloadChunks, all at once. */
export function payload(size: number, seed = 1): Buffer[] {
  return [...payloadChunks(size, seed)];
}

/** Polls `cond` every 10 ms; false when it did not hold within `ms`. */
export async function waitFor(cond: () => boolean, ms = 2000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

export function sha256(chunks: Buffer[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

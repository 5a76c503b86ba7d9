/**
 * Mesh CA benchmark: CSR signing throughput (raw in-process, and through the real gRPC/TLS
 * server on loopback) and issuance latency p50/p99 (the agent's whole path: key generation,
 * CSR, gRPC call, checks). Bounded: PHASE_MS per phase (default 5000; QUICK=1 -> 1500),
 * 4 phases, concurrency CONC (default 8). Loopback only; nothing written outside a temp dir
 * that is removed at the end.
 *
 *   node --import tsx test/bench/ca-bench.ts          (or: npx tsx test/bench/ca-bench.ts)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootstrapTokenAuthenticator, createBootstrapTokens, readBootstrapToken } from '../../src/identity/ca/bootstrap-tokens.js';
import { CertificateAuthority } from '../../src/identity/ca/ca.js';
import { CaClient } from '../../src/identity/workload/ca-client.js';
import { CaServer } from '../../src/identity/ca/ca-server.js';
import { CertificateStore } from '../../src/identity/workload/certificate-store.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../src/identity/x509/keys.js';
import { StaticNodeAuthorizer } from '../../src/identity/ca/node-authorizer.js';

const QUICK = process.env.QUICK === '1' || process.argv.includes('--quick');
const PHASE_MS = Number(process.env.PHASE_MS ?? (QUICK ? 1500 : 5000));
const CONC = Number(process.env.CONC ?? 8);
const MAX_OPS = 200_000; // hard bound per phase, whatever the machine
const TD = 'cluster.local';
const ID = `spiffe://${TD}/ns/bench/sa/app`;

interface Row {
  phase: string;
  ops: number;
  seconds: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Runs `op` from `conc` loops for PHASE_MS (or MAX_OPS), timing each call. */
async function phase(name: string, conc: number, op: (i: number) => Promise<unknown>): Promise<Row> {
  const lat: number[] = [];
  const t0 = performance.now();
  const end = t0 + PHASE_MS;
  let n = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (performance.now() < end && n < MAX_OPS) {
        const i = n++;
        const s = performance.now();
        await op(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { phase: name, ops: lat.length, seconds, perSecond: lat.length / seconds, p50ms: percentile(lat, 50), p99ms: percentile(lat, 99) };
}

function printTable(rows: Row[]): void {
  const head = ['phase', 'ops', 'seconds', 'per second', 'p50 ms', 'p99 ms'];
  const body = rows.map((r) => [r.phase, String(r.ops), r.seconds.toFixed(2), r.perSecond.toFixed(0), r.p50ms.toFixed(2), r.p99ms.toFixed(2)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const b of body) console.log(line(b));
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `skein-ca-bench-${process.pid}-`));
  const cleanups: Array<() => unknown> = [() => rmSync(dir, { recursive: true, force: true })];
  try {
    const ca = await CertificateAuthority.create({ trustDomain: TD });
    // A pool of CSRs made up front: the CA phases measure the CA, not the client's keygen.
    const csrs = await Promise.all(Array.from({ length: 64 }, async () => createWorkloadCsr(ID, await generateP256KeyPair())));
    const csr = (i: number) => csrs[i % csrs.length] as string;
    const rows: Row[] = [];

    rows.push(await phase('raw CA.issue, 1 caller', 1, (i) => ca.issue(csr(i), 3600)));
    rows.push(await phase(`raw CA.issue, ${CONC} callers`, CONC, (i) => ca.issue(csr(i), 3600)));

    const files = await createBootstrapTokens(join(dir, 'tokens'), ['bench-node']);
    const server = new CaServer({
      ca,
      authenticator: await BootstrapTokenAuthenticator.fromDirectory(join(dir, 'tokens')),
      authorizer: new StaticNodeAuthorizer({ 'bench-node': [ID] }),
      address: '127.0.0.1:0',
      servingSans: ['127.0.0.1'],
    });
    const port = await server.start();
    cleanups.push(() => server.stop(500));
    const client = new CaClient({ address: `127.0.0.1:${port}`, rootsPem: ca.trustBundlePem(), token: await readBootstrapToken(files['bench-node'] as string) });
    cleanups.push(() => client.close());
    await client.fetchTrustBundle(); // connect + TLS handshake outside the measurement
    rows.push(await phase(`gRPC CreateCertificate, ${CONC} callers`, CONC, (i) => client.issue({ csrPem: csr(i), ttlSeconds: 3600 })));

    // Agent-side issuance: keygen + CSR + gRPC + verification, one identity after another.
    const store = new CertificateStore({ trustDomain: TD, issuer: client, initialTrustBundlePem: ca.trustBundlePem(), bundleRefreshIntervalMs: 0 });
    cleanups.push(() => store.close());
    rows.push(
      await phase('agent issuance (keygen+CSR+gRPC+verify)', 1, async () => {
        store.acquire(ID);
        await store.certificateFor(ID);
        store.release(ID);
      }),
    );

    console.log(`\nskein mesh CA benchmark (node ${process.version}, ${PHASE_MS} ms per phase, ECDSA P-256)\n`);
    printTable(rows);
    const issued = (await ca.metrics.issued.get()).values[0]?.value ?? 0;
    console.log(`\ncertificates signed in total: ${issued}`);
    console.log(`BENCH_JSON ${JSON.stringify({ bench: 'ca', phaseMs: PHASE_MS, conc: CONC, rows })}`);
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

await main();

/**
 * The agent's end of skein-cni: a unix socket (root only) where each connection carries one
 * CNI call (a JSON object, then end of stream) and gets one answer (`<exit code>\n<stdout>`),
 * after which the agent closes it. The decision is the handler's (NodeAgent's pod start);
 * here: size and time bounds, parse errors as CNI error results, a log line per call.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { messageOf, SkeinError } from '../errors.js';
import { MESH_LABEL, type Workload } from '../config/model.js';
import type { Logger } from '../telemetry/log.js';
import { AgentCode } from './codes.js';
import { listenRootOnly } from './root-socket.js';
import { type CniAnswer, type CniCall, CniError, CniErrorCode, errorAnswer, parseCniCall, versionAnswer } from './cni-request.js';

/** Where skein-cni finds the agent unless its config says otherwise (`agent_socket`). */
export const DEFAULT_CNI_SOCKET = '/var/run/skein/cni.sock';
/** A network configuration with its prevResult is a few KiB; 1 MiB is far beyond any real one. */
const MAX_REQUEST_BYTES = 1 << 20;

/**
 * The namespaces this node's pods show to be outside the mesh: a local pod that is not meshed
 * and did not opt out itself (skein.io/mesh=disabled) is in a namespace without the mesh
 * label. skein-cni reads this list (the file next to the agent's socket) only when the agent
 * cannot be reached: a pod of a namespace listed starts without the agent; any other pod —
 * of a meshed namespace or of one this node has not seen — waits for the agent.
 */
export function unmeshedNamespaces(localWorkloads: readonly Workload[]): string[] {
  const meshed = new Set(localWorkloads.filter((w) => w.meshEnabled).map((w) => w.namespace));
  const out = new Set<string>();
  for (const w of localWorkloads) {
    if (!w.meshEnabled && w.labels[MESH_LABEL] !== 'disabled' && !meshed.has(w.namespace)) out.add(w.namespace);
  }
  return [...out].sort();
}

/** Where skein-cni looks for the list when the agent is away: `<socket>.unmeshed-namespaces`. */
export function unmeshedFileOf(socketPath: string): string {
  return `${socketPath}.unmeshed-namespaces`;
}

/** Writes the list (one namespace a line) when it changed; atomically, skein-cni may read it any time. */
export function writeUnmeshedNamespaces(file: string, namespaces: readonly string[]): boolean {
  const text = namespaces.map((n) => `${n}\n`).join('');
  try {
    if (readFileSync(file, 'utf8') === text) return false;
  } catch {
    // not written yet
  }
  writeFileSync(`${file}.tmp`, text, { mode: 0o644 });
  renameSync(`${file}.tmp`, file);
  return true;
}

export interface CniServerOptions {
  path: string;
  handle: (call: CniCall) => Promise<CniAnswer>;
  log: Logger;
  /** A call not answered by then is answered with "try again later" (ms); below skein-cni's own timeout. */
  answerTimeoutMs?: number;
}

export interface CniServer {
  close(): Promise<void>;
}

/** Answers one raw request: parse, handle (bounded in time), errors as CNI error results. */
export async function answerCniRequest(raw: string, handle: (call: CniCall) => Promise<CniAnswer>, timeoutMs: number, log: Logger): Promise<CniAnswer> {
  let call: CniCall | undefined;
  try {
    call = parseCniCall(raw);
    if (call.command === 'VERSION') return versionAnswer();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CniError(CniErrorCode.TryAgainLater, AgentCode.CniCaptureFailed, `the agent did not finish ${call!.command} within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([handle(call), timeout]);
    } finally {
      clearTimeout(timer);
    }
  } catch (err) {
    const cniErr =
      err instanceof CniError
        ? err
        : new CniError(CniErrorCode.TryAgainLater, err instanceof SkeinError ? err.code : AgentCode.CniCaptureFailed, messageOf(err));
    log.warn({ code: cniErr.code, cniCode: cniErr.cniCode, command: call?.command, pod: call?.pod, containerId: call?.containerId, err: cniErr.message }, 'CNI call refused');
    // DEL never fails a pod's removal: what is left is released once the netns is gone.
    if (call?.command === 'DEL') return { exitCode: 0, stdout: '' };
    return errorAnswer(call?.cniVersion ?? '1.0.0', cniErr);
  }
}

export async function startCniServer(opts: CniServerOptions): Promise<CniServer> {
  const { path, log } = opts;
  const timeoutMs = opts.answerTimeoutMs ?? 25_000;
  const open = new Set<Socket>();
  // skein-cni shuts its write side down after the request: keep ours open for the answer.
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => {}); // the plugin gave up (its timeout): nothing to answer
    const chunks: Buffer[] = [];
    let size = 0;
    sock.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_REQUEST_BYTES) {
        sock.destroy();
        return;
      }
      chunks.push(c);
    });
    sock.on('end', () => {
      void answerCniRequest(Buffer.concat(chunks).toString('utf8'), opts.handle, timeoutMs, log).then((a) => {
        if (!sock.destroyed) sock.end(`${a.exitCode}\n${a.stdout}`);
      });
    });
  });
  // Only root may ask the agent to capture a namespace.
  await listenRootOnly(server, path, { code: AgentCode.CniSocketPath, flag: '--cni-socket' });
  log.info({ path }, 'CNI socket listening');
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

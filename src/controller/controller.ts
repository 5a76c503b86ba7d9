/**
 * The controller: sources (a folder of YAML and/or the Kubernetes API) -> ObjectStore ->
 * MeshIndex -> ConfigServer (the agents' stream), and the mesh CA (identity's CaServer)
 * authorizing each node by the index's pods. One object a process; `runController` (main.ts)
 * builds it from flags.
 */
import type { Registry } from 'prom-client';
import { controllerMetrics } from './metrics.js';
import type * as grpc from '@grpc/grpc-js';
import { messageOf } from '../errors.js';
import type { Authenticator } from '../identity/ca/authn.js';
import type { CertificateAuthority } from '../identity/ca/ca.js';
import { CaServer } from '../identity/ca/ca-server.js';
import { WorkloadNodeAuthorizer } from '../identity/ca/node-authorizer.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import { type AgentStatus, ConfigServer } from './config-server.js';
import { CaRotation } from './ca-rotation.js';
import { FolderSource } from './folder-source.js';
import { MeshIndex, type MeshIndexOptions } from './mesh-index.js';
import type { Refusal } from './resources.js';
import { ObjectStore } from './object-store.js';

/** Something that feeds the ObjectStore (folder, Kubernetes). */
export interface ObjectSource {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ControllerOptions extends MeshIndexOptions {
  /** Folder of YAML to watch (standalone mode). */
  folder?: string;
  folderRescanMs?: number;
  /** Extra sources fed into the same store (the Kubernetes source). */
  sources?: ((store: ObjectStore) => ObjectSource)[];
  authenticator: Authenticator;
  /** Config stream address (default 0.0.0.0:15010). */
  configAddress?: string;
  configCredentials?: grpc.ServerCredentials;
  /** Host the mesh CA here (with its address, default 0.0.0.0:15012). */
  ca?: { ca: CertificateAuthority; address?: string; servingSans?: string[] };
  controllerId?: string;
  /** Reports whether this replica holds the CA lease (status only). */
  isLeader?: () => boolean;
  /** Where the controller's metrics go (config pushes, agents, push latency); absent: none. */
  registry?: Registry;
  /** How far back the traffic figures (skein top, the graph page) look (ms). Default 60 s. */
  trafficWindowMs?: number;
  /** The operator's credential (skein ca rotate); absent: rotation is refused. */
  operatorToken?: () => string | undefined;
  logger?: Logger;
}

export interface ControllerStatus {
  controllerId: string;
  version: string;
  objects: number;
  resources: number;
  refusals: Refusal[];
  agents: AgentStatus[];
  leader: boolean;
}

/** Nodes that run at least one meshed pod. */
function meshedNodes(workloads: Iterable<{ node?: string; meshEnabled: boolean }>): Set<string> {
  const out = new Set<string>();
  for (const w of workloads) if (w.meshEnabled && w.node) out.add(w.node);
  return out;
}

export class Controller {
  readonly store = new ObjectStore();
  readonly index: MeshIndex;
  readonly configServer: ConfigServer;
  caServer: CaServer | undefined;
  private readonly sources: ObjectSource[] = [];
  private readonly folder: FolderSource | undefined;
  private readonly log: Logger;

  constructor(private readonly opts: ControllerOptions) {
    this.log = opts.logger ?? silentLogger();
    this.index = new MeshIndex(this.store, opts);
    if (opts.folder) {
      this.folder = new FolderSource(this.store, { dir: opts.folder, rescanMs: opts.folderRescanMs, logger: this.log });
      this.sources.push(this.folder);
    }
    for (const make of opts.sources ?? []) this.sources.push(make(this.store));
    this.configServer = new ConfigServer({
      index: this.index,
      ...(opts.trafficWindowMs ? { trafficWindowMs: opts.trafficWindowMs } : {}),
      authenticator: opts.authenticator,
      address: opts.configAddress,
      credentials: opts.configCredentials,
      controllerId: opts.controllerId,
      isLeader: opts.isLeader,
      refusals: () => this.refusals(),
      objects: () => this.store.size,
      ...(opts.operatorToken ? { operatorToken: opts.operatorToken } : {}),
      ...(opts.registry
        ? {
            metrics: controllerMetrics(opts.registry, {
              agents: () => this.configServer.agents().length,
              version: () => this.index.version,
              resources: () => this.index.entries().size,
              refusals: () => this.refusals().length,
            }),
          }
        : {}),
      logger: this.log,
    });
  }

  /** Reads the sources once, builds the index, then serves. Resolves with the bound ports. */
  async start(): Promise<{ configPort: number; caPort?: number }> {
    for (const s of this.sources) await s.start();
    const first = this.index.flush();
    this.log.info(
      { objects: this.store.size, resources: this.index.entries().size, refused: this.index.refusals().length, version: first?.version },
      'controller index built',
    );
    for (const r of this.refusals()) this.log.warn({ ...r }, 'resource refused');
    const configPort = await this.configServer.start();
    let caPort: number | undefined;
    if (this.opts.ca) {
      this.caServer = new CaServer({
        ca: this.opts.ca.ca,
        authenticator: this.opts.authenticator,
        authorizer: new WorkloadNodeAuthorizer(() => this.index.workloads()),
        address: this.opts.ca.address,
        servingSans: this.opts.ca.servingSans,
        logger: this.log,
      });
      caPort = await this.caServer.start();
      this.configServer.caOperations = new CaRotation({
        ca: this.opts.ca.ca,
        agents: this.configServer,
        ...(this.opts.isLeader ? { isLeader: this.opts.isLeader } : {}),
        expectedNodes: () => meshedNodes(this.index.workloads()),
        logger: this.log,
      });
    }
    return caPort === undefined ? { configPort } : { configPort, caPort };
  }

  async stop(): Promise<void> {
    for (const s of this.sources) await s.stop().catch((err) => this.log.warn({ err: messageOf(err) }, 'source stop failed'));
    await this.configServer.stop(200);
    await this.caServer?.stop(200);
    this.index.close();
  }

  /** Re-reads the folder now (what a file event would do; tests and `SIGHUP`). */
  async rescanFolder(): Promise<void> {
    await this.folder?.scan();
  }

  /** Refused objects and unreadable files, each with where, which field and why. */
  refusals(): Refusal[] {
    const files = (this.folder?.fileProblems() ?? []).map((p) => ({
      object: `(file) ${p.file}`,
      key: `file:${p.file}`,
      origin: p.file,
      field: p.field,
      reason: p.reason,
      code: p.code,
    }));
    return [...files, ...this.index.refusals()];
  }

  status(): ControllerStatus {
    return {
      controllerId: this.configServer.controllerId,
      version: this.index.version,
      objects: this.store.size,
      resources: this.index.entries().size,
      refusals: this.refusals(),
      agents: this.configServer.agents(),
      leader: this.opts.isLeader?.() ?? true,
    };
  }
}
